"""Export: the NMS used while exporting equals torchvision's; post-processing round-trips through
ONNX; the whole trained detector (slow) round-trips within 1e-4 on tiny/bccd8 images."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torchvision.ops import batched_nms

from detfn.analysis.export import (
    ExportError,
    _single_nms_batched,
    export_onnx,
    export_program,
    exportable_nms,
    run_onnx,
)
from detfn.models import postprocess
from detfn.models.postprocess import multiclass_nms

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_ort = pytest.mark.skipif(
    not HAS_ORT,
    reason="onnx / onnxscript / onnxruntime not installed (pip install 'detfn[export]')",
)


def random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=generator) * 40 + 1], 1)


def test_single_nms_equals_torchvision_batched_nms():
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 300, 5000):  # 5000: torchvision's per-key loop branch on the CPU
        boxes, scores = random_boxes(n, g), torch.rand(n, generator=g)
        keys = torch.randint(0, 7, (n,), generator=g)
        expected = batched_nms(boxes, scores, keys, 0.5)
        got = _single_nms_batched(boxes, scores, keys, 0.5)
        # the same boxes kept; equal scores (ties among 5000 draws) may come in either order
        torch.testing.assert_close(got.sort().values, expected.sort().values)
        torch.testing.assert_close(scores[got], scores[expected])


def test_exportable_nms_patches_and_restores():
    with exportable_nms() as patched:
        assert "detfn.models.postprocess" in patched
        assert postprocess.batched_nms is _single_nms_batched
    assert postprocess.batched_nms is batched_nms


class PostProcess(torch.nn.Module):
    def forward(self, boxes, scores):
        mask = torch.ones(boxes.shape[:2], dtype=torch.bool)
        d = multiclass_nms(boxes, scores, mask, score_thr=0.05, iou_threshold=0.5, max_per_img=20)
        keep = d.mask[0]
        return d.boxes[0][keep].clamp(0, 120.0), d.scores[0][keep], d.labels[0][keep]


@needs_ort
def test_postprocess_round_trips_through_onnx(tmp_path):
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(60, g)[None]
    scores = torch.rand(1, 60, 3, generator=g)
    module = PostProcess()
    program = export_program(module, boxes, scores)
    path = export_onnx(program, tmp_path / "post.onnx")
    got = run_onnx(path, [boxes, scores])
    expected = module(boxes, scores)
    assert expected[0].shape[0] > 5
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.as_tensor(a), b, atol=1e-5, rtol=0)


def test_bad_opset_and_unexportable_are_clear(tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(None, tmp_path / "x.onnx", opset=13)

    class Dynamic(torch.nn.Module):
        def forward(self, x):
            return x.new_zeros(int(x.sum().item() > 0) + (1 if x.max() > 0 else 2))

    with pytest.raises(ExportError, match="torch.export cannot trace Dynamic"):
        export_program(Dynamic(), torch.randn(1, 3, 4, 4))


@pytest.mark.slow
@needs_ort
def test_trained_detector_round_trip_on_bccd8(tiny_run, tiny_images, tmp_path):
    from experiments import export as export_cli

    _, work_dir = tiny_run
    report = export_cli.main(
        export_cli.ExportArgs(
            config=str(work_dir / "config.json"),
            checkpoint=str(work_dir / "latest.pth"),
            image=str(tiny_images[0]),
            out_dir=str(tmp_path),
        )
    )
    assert report.num_detections > 0
    for kind in ("torch.export", "onnx"):
        diffs = report.differences[kind]
        assert diffs["boxes"] <= 1e-4 and diffs["scores"] <= 1e-4 and diffs["labels"] == 0, diffs


def test_a_two_stage_detector_exports_on_the_cpu_with_torchvision_roi_align():
    """On the CPU the eager RoIAlign is a sparse matrix whose size depends on the boxes, and the
    large 3x3 convolutions run Winograd's tiles; the export traces torchvision's RoIAlign and
    torch's convolution instead, and the graph equals eager run with them."""
    from detfn.analysis.export import DetectorInference
    from detfn.apis import bccd_cpu_preset
    from detfn.ops import reference_kernels, uses_winograd
    from detfn.registry import build

    torch.manual_seed(0)
    module = DetectorInference(build(bccd_cpu_preset().model))
    images = torch.randn(1, 3, 256, 320)
    assert uses_winograd(torch.zeros(1, 256, 64, 80), 256)  # eager's P2 convolutions would
    program = export_program(module, images)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "torchvision.roi_align.default" in targets
    assert "aten.bmm.default" not in targets  # no Winograd products in the graph
    with torch.no_grad(), reference_kernels():
        expected = module(images)
    for ours, ref in zip(program.module()(images), expected):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
