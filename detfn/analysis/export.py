"""Export a detector's inference with ``torch.export`` and to ONNX, and check it against eager.

What is exported: the whole inference of a batch of one image of a fixed size, from the
normalized, padded image tensor ``Tensor[1, 3, H, W]`` (what the test pipeline produces) to the
detections ``boxes [N, 4]`` (xyxy, in that tensor's frame), ``scores [N]`` and ``labels [N]``:
backbone, neck, heads, box decoding, NMS and the top-k. ``N`` is data-dependent.

What is not: the test pipeline (resize, normalize, pad: do them before the graph and divide the
boxes by the pipeline's scale factor after), images of other sizes or batches of more than one
(the graph is specialized to the example's shape), instance masks, test-time augmentation.

Five things make the detfn detectors exportable without touching their code:

* data-dependent sizes (``int(tensor)`` of a proposal count) are traced as symbolic sizes by
  dynamo (``capture_scalar_outputs``), so ``torch.export`` runs in strict mode;
* ``torchvision.ops.batched_nms`` picks its algorithm by a data-dependent box count; while
  exporting, detfn modules call an equivalent single-``nms`` form (boxes of each key offset into
  their own range, which is what torchvision itself does below 4000 boxes on the CPU);
* the ONNX converter rejects ``clamp`` with an int and a float bound (box clipping to an image
  writes ``clamp(0, width)``); such int bounds of float tensors are made floats in the graph;
* RoIAlign runs torchvision's kernel (``torchvision::roi_align``, ONNX ``RoiAlign``) rather than
  the CPU's sparse matrix, whose size depends on the boxes, and 3x3 convolutions run torch's
  kernel rather than Winograd's tiles (:func:`detfn.ops.reference_kernels`);
* ONNX has no stable sort; ``aten.sort(stable=True)`` of a 1-D integer tensor is exported as a
  ``TopK`` of ``value * n + position``, whose keys are distinct, so the order is the stable one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from detfn.models.functional import detector_predict_fn, split
from detfn.ops import reference_kernels
from detfn.structures import ImageMeta

__all__ = [
    "DEFAULT_OPSET",
    "DetectorInference",
    "ExportError",
    "export_onnx",
    "export_program",
    "exportable_nms",
    "run_onnx",
]

DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """A part of a detector that ``torch.export`` or the ONNX converter cannot express."""


class DetectorInference(nn.Module):
    """``images [1, 3, H, W] -> (boxes [N, 4], scores [N], labels [N])`` of a detector.

    The detector runs through its pure predict function with its own weights; the image meta
    says the input is its own original image (scale 1, no flip), so the boxes are in the
    frame of the given tensor, clipped to it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.predict = detector_predict_fn(model)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if images.dim() != 4 or images.shape[0] != 1 or images.shape[1] != 3:
            raise ValueError(f"exported inference takes [1, 3, H, W], got {tuple(images.shape)}")
        height, width = int(images.shape[2]), int(images.shape[3])
        meta = ImageMeta("<export>", 0, (height, width), (height, width), (height, width))
        params, buffers = split(self.model)
        [dets] = self.predict(params, buffers, images, [meta])
        return dets.boxes, dets.scores, dets.labels


def _single_nms_batched(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float):
    """``torchvision.ops.batched_nms`` without its data-dependent branch: boxes of key ``i`` are
    shifted by ``i * (max coordinate + 1)`` so that different keys never overlap."""
    largest = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (largest + 1)
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)


@contextlib.contextmanager
def exportable_nms() -> Iterator[list[str]]:
    """Within the block, every loaded ``detfn`` module that imported torchvision's
    ``batched_nms`` calls :func:`_single_nms_batched`; yields the patched module names."""
    original = torchvision.ops.batched_nms
    patched = [
        name
        for name, module in list(sys.modules.items())
        if name.startswith("detfn") and getattr(module, "batched_nms", None) is original
    ]
    for name in patched:
        sys.modules[name].batched_nms = _single_nms_batched
    try:
        yield patched
    finally:
        for name in patched:
            sys.modules[name].batched_nms = original


def _where(error: BaseException) -> str:
    """The 'Caused by' / user frame torch's message names, else the error's first line."""
    text = str(error)
    for line in text.splitlines():
        if line.startswith("Caused by") or ('File "' in line and "detfn" in line):
            return line.strip()
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def export_program(module: nn.Module, *inputs: Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module(*inputs)`` (strict, data-dependent sizes as symbols), with
    the graph fixes ONNX needs applied.

    Raises:
        ExportError: naming the operation or source line that cannot be exported.
    """
    import torch._dynamo

    patch = torch._dynamo.config.patch(
        capture_scalar_outputs=True, capture_dynamic_output_shape_ops=True
    )
    with patch, exportable_nms(), reference_kernels(), torch.no_grad():
        try:
            program = torch.export.export(module, tuple(inputs), strict=True)
        except Exception as error:
            raise ExportError(
                f"torch.export cannot trace {type(module).__name__}: {_where(error)}"
            ) from error
    _float_clamp_bounds(program)
    return program


def _float_clamp_bounds(program: torch.export.ExportedProgram) -> int:
    """Make int bounds of ``clamp`` on float tensors floats, in place; returns the count."""
    changed = 0
    for node in program.graph.nodes:
        if node.target is not torch.ops.aten.clamp.default:
            continue
        value = node.args[0].meta.get("val")
        bounds = node.args[1:]
        if value is not None and value.is_floating_point() and int in map(type, bounds):
            node.args = (node.args[0], *(float(a) if type(a) is int else a for a in bounds))
            changed += 1
    if changed:
        program.graph_module.recompile()
    return changed


def _stable_sort_1d(self, stable=None, dim=-1, descending=False):
    """ONNX of ``aten.sort.stable`` for a 1-D integer tensor, ascending (detfn's only use)."""
    from onnxscript import opset18 as op

    n = op.Shape(self, start=0, end=1)
    positions = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
    keys = op.Add(op.Mul(op.Cast(self, to=7), op.Cast(n, to=7)), op.Cast(positions, to=7))
    _, order = op.TopK(keys, n, axis=-1, largest=0, sorted=1)
    return op.Gather(self, order, axis=0), order


def _check_sorts(program: torch.export.ExportedProgram) -> None:
    """The ONNX stable sort handles ascending 1-D sorts only; anything else is an error."""
    for node in program.graph.nodes:
        if node.target is torch.ops.aten.sort.stable:
            value = node.args[0].meta.get("val")
            descending = node.kwargs.get("descending", False)
            if value is None or value.dim() != 1 or descending or value.is_floating_point():
                raise ExportError(
                    f"ONNX export supports a stable sort of 1-D integers ascending only; "
                    f"node {node.name} sorts {getattr(value, 'shape', '?')} "
                    f"descending={descending}"
                )


def export_onnx(
    program: torch.export.ExportedProgram, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET
) -> Path:
    """Convert an exported program to an ONNX file (opset >= 17); returns the path.

    Raises:
        ImportError: onnx / onnxscript missing (``pip install 'detfn[export]'``).
        ExportError: an operation without an ONNX translation, named.
    """
    if opset < 17:
        raise ValueError(
            f"opset must be >= 17 (RoiAlign's half-pixel mode, LayerNorm), got {opset}"
        )
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError(
            "ONNX export needs onnx and onnxscript: pip install 'detfn[export]'"
        ) from None
    _check_sorts(program)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(
            program,
            f=str(path),
            dynamo=True,
            opset_version=opset,
            custom_translation_table={torch.ops.aten.sort.stable: _stable_sort_1d},
            verbose=False,
        )
    except Exception as error:
        raise ExportError(f"ONNX conversion failed: {_where(error)}") from error
    return path


def run_onnx(path: str | os.PathLike[str], inputs: Sequence[Tensor]) -> list[np.ndarray]:
    """Outputs of the ONNX file on ``inputs`` through onnxruntime's CPU provider."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running ONNX needs onnxruntime: pip install 'detfn[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        arg.name: tensor.detach().cpu().numpy() for arg, tensor in zip(session.get_inputs(), inputs)
    }
    return session.run(None, feeds)
