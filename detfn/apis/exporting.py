"""Export a loaded detector (``load_detector``) for an example image, and check the exported
graph and the ONNX file against eager PyTorch on the same input."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from detfn.analysis.export import (
    DEFAULT_OPSET,
    DetectorInference,
    export_onnx,
    export_program,
    run_onnx,
)
from detfn.apis.inference import Detector
from detfn.data import Sample, collate
from detfn.data.transforms.loading import read_rgb
from detfn.models.functional import load_into
from detfn.ops import reference_kernels
from detfn.registry import build
from detfn.structures import ImageMeta

__all__ = ["ExportReport", "export_detector", "max_differences", "network_input"]


def network_input(
    detector: Detector, image: str | os.PathLike[str]
) -> tuple[torch.Tensor, ImageMeta]:
    """The test pipeline's tensor ``[1, 3, H, W]`` of an image file, and its meta (whose
    ``scale_factor`` maps the exported boxes back to the original image)."""
    pixels = read_rgb(str(image))
    shape = (int(pixels.shape[1]), int(pixels.shape[2]))
    empty = torch.zeros((0, 4))
    sample = Sample(
        pixels,
        empty,
        torch.zeros(0, dtype=torch.int64),
        empty,
        ImageMeta(str(image), 0, shape, shape, shape),
    )
    generator = torch.Generator().manual_seed(0)
    for transform in (build(t) for t in detector.pipeline):
        sample = transform(sample, generator)
    batch = collate([sample])
    return batch.images.to(detector.device), batch.metas[0]


def max_differences(
    got: list[torch.Tensor], expected: tuple[torch.Tensor, ...]
) -> dict[str, float]:
    """Largest absolute difference of boxes and scores, and the count of differing labels."""
    names = ("boxes", "scores", "labels")
    diffs: dict[str, float] = {}
    for name, a, b in zip(names, got, expected):
        a = torch.as_tensor(a).cpu()
        b = b.cpu()
        if a.shape != b.shape:
            raise AssertionError(f"{name}: shape {tuple(a.shape)} != eager {tuple(b.shape)}")
        if name == "labels":
            diffs[name] = float((a != b).sum())
        else:
            diffs[name] = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    return diffs


@dataclass
class ExportReport:
    """Files written and how far each export is from eager PyTorch (``max_differences``)."""

    input_shape: tuple[int, ...]
    num_detections: int
    files: dict[str, Path] = field(default_factory=dict)
    differences: dict[str, dict[str, float]] = field(default_factory=dict)


def export_detector(
    detector: Detector,
    image: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    onnx: bool = True,
    run: bool = True,
    opset: int = DEFAULT_OPSET,
) -> ExportReport:
    """``model.pt2`` (``torch.export``) and ``model.onnx`` of the detector at ``image``'s network
    input size; with ``run``, both are executed on that input and compared with eager."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_into(detector.model, detector.params, detector.buffers)
    module = DetectorInference(model)
    images, _ = network_input(detector, image)
    with torch.no_grad(), reference_kernels():  # the kernels the graph holds
        eager = module(images)
    report = ExportReport(tuple(images.shape), int(eager[0].shape[0]))
    program = export_program(module, images)
    report.files["torch.export"] = out_dir / "model.pt2"
    torch.export.save(program, report.files["torch.export"])
    if run:
        with torch.no_grad():
            report.differences["torch.export"] = max_differences(
                list(program.module()(images)), eager
            )
    if onnx:
        report.files["onnx"] = export_onnx(program, out_dir / "model.onnx", opset)
        if run:
            report.differences["onnx"] = max_differences(
                run_onnx(report.files["onnx"], [images]), eager
            )
    return report
