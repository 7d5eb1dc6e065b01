"""experiments.benchmark runs end to end at a tiny size and both models do the same work.

A smoke test: it asserts that the run completes, that detfn and torchvision did the same work at
every step (Faster R-CNN: proposals kept, RoIs sampled, candidates of the final NMS; RetinaNet
and FCOS: positive anchors or points, candidates of the final NMS), so that a ratio is reported,
and that the JSON file holds the results - never a timing.
"""

import json

import pytest
import torch

from experiments.benchmark import BenchArgs, run, synthetic_batch
from experiments.benchmark_models import PAIRS
from experiments.benchmark_sides import BenchSettings


@pytest.mark.parametrize(
    ("model", "size", "counters"),
    [
        ("faster_rcnn", (64, 96), ("proposals", "rois", "nms_candidates")),
        # a multiple of the top stride 128, where torchvision's integer strides are the nominal ones
        ("retinanet", (128, 128), ("positives", "nms_candidates")),
        ("fcos", (128, 128), ("positives", "nms_candidates")),
    ],
)
def test_benchmark_completes_with_equal_work(tmp_path, capsys, model, size, counters):
    out = tmp_path / "bench.json"
    args = BenchArgs(
        model=model,
        depth=18,
        size=size,
        batch=1,
        num_classes=3,
        iters=1,
        warmup=0,
        memory=False,
        output=out,
    )
    report = run(args)
    printed = capsys.readouterr().out
    assert "WORK DIFFERS" not in printed
    for counter in counters:
        assert f"{counter}=[" in printed, counter
    assert "nms_candidates=[0]" not in printed  # the NMS had something to do
    for which in ("train", "inference"):
        assert report["results"][which]["equal_work"]
        assert report["results"][which]["ratio_median"] is not None
    assert json.loads(out.read_text())["settings"]["depth"] == 18


@pytest.mark.parametrize(
    ("layout", "said"),
    [
        ("as-shipped", "detfn NHWC (train) / NHWC (inference), torchvision NCHW"),
        ("both-nhwc", "NHWC on both sides"),
    ],
)
def test_benchmark_says_the_layouts_and_keeps_equal_work_in_them(tmp_path, capsys, layout, said):
    args = BenchArgs(
        depth=18,
        size=(64, 96),
        batch=1,
        num_classes=3,
        iters=1,
        warmup=0,
        memory=False,
        measure=("inference",),
        layout=layout,
        output=tmp_path / "bench.json",
    )
    report = run(args)
    assert f"activation layout: {said}" in capsys.readouterr().out
    assert report["results"]["inference"]["equal_work"]


@pytest.mark.parametrize(
    ("layout", "detfn_nhwc", "torchvision_nhwc"),
    [("as-shipped", True, False), ("both-nhwc", True, True), ("both-nchw", False, False)],
)
def test_the_layout_setting_reaches_both_models(layout, detfn_nhwc, torchvision_nhwc):
    """``--layout`` changes what the two models compute in, not only what the benchmark says."""
    cpu = torch.device("cpu")
    args = BenchArgs(depth=18, size=(64, 96), batch=1, num_classes=3, layout=layout)
    settings = BenchSettings(18, 3, (64, 96), 0, cpu, None, layout=layout)
    pair = PAIRS["faster_rcnn"](settings, synthetic_batch(args, cpu))
    images = synthetic_batch(args, cpu).images
    nhwc = torch.channels_last
    with torch.no_grad():
        ours = pair.detfn.model.features(images)
        theirs = pair.torchvision.model.backbone(images).values()
    assert all(f.is_contiguous(memory_format=nhwc) == detfn_nhwc for f in ours)
    assert all(f.is_contiguous(memory_format=nhwc) == torchvision_nhwc for f in theirs)
