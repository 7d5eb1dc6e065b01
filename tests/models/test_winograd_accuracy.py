"""What Winograd's convolutions cost a whole detector in accuracy: nothing beyond float32's own.

The torchvision equivalence tests compare with torchvision at tolerances set for equal kernels.
Here the CPU default (Winograd on the large 256-channel levels) is held against float64
instead: its losses, gradients and head outputs must be as close to the exact ones as torch's
direct kernels' are, up to 1e-4 (gradients) and 2e-6 (outputs) of their norm.
"""

from __future__ import annotations

import dataclasses

import torch

from detfn.apis import RETINANET_R50_FPN_1X_COCO
from detfn.config import override
from detfn.models.functional import detector_loss_fn, split
from detfn.ops import conv_backend
from detfn.ops.winograd import _Winograd3x3
from detfn.registry import build
from experiments.benchmark import BenchArgs, synthetic_batch
from tests.models.test_channels_last import R18_NECK, frozen_bn_faster_rcnn_config
from tests.models.test_faster_rcnn_vs_torchvision import sample_everything

NAMES = (
    "backbone.layer2.0.conv1.weight",  # the first trainable layer: every path's gradient
    "neck.fpn_convs.0.weight",  # a Winograd layer (P2, 64x80)
    "rpn_head.rpn_conv.weight",  # Winograd on P2 and P3
    "roi_head.bbox_head.shared_fcs.0.weight",
)


def count_winograd_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    forward = _Winograd3x3.forward
    monkeypatch.setattr(
        _Winograd3x3, "forward", staticmethod(lambda *a: calls.append(1) or forward(*a))
    )
    return calls


def losses_and_grads(dtype: torch.dtype, backend: str) -> tuple[list[float], list[torch.Tensor]]:
    """Faster R-CNN R-18-FPN as the benchmark builds it (FrozenBN, 256-channel FPN), 2 x 256x320,
    every proposal sampled (no random draw)."""
    torch.manual_seed(0)
    model = build(sample_everything(frozen_bn_faster_rcnn_config("auto"))).to(dtype)
    batch = synthetic_batch(BenchArgs(size=(256, 320), num_classes=3, boxes_per_image=4), "cpu")
    batch = dataclasses.replace(batch, images=batch.images.to(dtype))
    params, buffers = split(model)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    with conv_backend(backend):  # type: ignore[arg-type]
        total, losses = detector_loss_fn(model, seed=3)(params, buffers, batch)
        grads = torch.autograd.grad(total, [params[n] for n in NAMES])
    losses = [float(v.detach()) for k, v in losses.items() if k.startswith("loss")]
    return losses, [g.double() for g in grads]


def test_winograd_losses_and_gradients_are_as_close_to_float64_as_the_direct_kernels(
    monkeypatch,
):
    calls = count_winograd_calls(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order per run
    try:
        exact_losses, exact = losses_and_grads(torch.float64, "direct")
        _, direct = losses_and_grads(torch.float32, "direct")
        assert not calls
        ours_losses, ours = losses_and_grads(torch.float32, "auto")
    finally:
        torch.set_num_threads(threads)
    assert len(calls) >= 4  # the FPN's and the RPN's convolutions on P2 and P3
    for value, reference in zip(ours_losses, exact_losses):
        assert abs(value - reference) <= 1e-5 * abs(reference)
    for name, got, baseline, reference in zip(NAMES, ours, direct, exact):
        error = (got - reference).norm()
        direct_error = (baseline - reference).norm()
        assert error <= 1.5 * direct_error + 1e-4 * reference.norm(), (
            name,
            float(error),
            float(direct_error),
        )


def head_outputs(
    model, images: torch.Tensor, dtype: torch.dtype, backend: str
) -> list[torch.Tensor]:
    model = model.to(dtype)
    with torch.no_grad(), conv_backend(backend):  # type: ignore[arg-type]
        scores, deltas = model.bbox_head(model.features(images.to(dtype)))
    return [t.double() for t in (*scores, *deltas)]


def test_retinanet_head_outputs_are_as_close_to_float64_as_the_direct_kernels(monkeypatch):
    """Inference: RetinaNet's 256-channel towers and classifier run Winograd at
    512x640 (P3); every level's scores and deltas stay as close to float64 as with torch's kernels,
    up to 2e-6 of their norm."""
    cfg = override(
        RETINANET_R50_FPN_1X_COCO.model,
        {
            "backbone.depth": 18,
            "neck.in_channels": R18_NECK,
        },  # 80 classes: a 720-channel classifier
    )
    torch.manual_seed(0)
    model = build(cfg).eval()
    images = torch.randn(1, 3, 512, 640)
    calls = count_winograd_calls(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exact = head_outputs(model, images, torch.float64, "direct")
        direct = head_outputs(model, images, torch.float32, "direct")
        ours = head_outputs(model, images, torch.float32, "auto")
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 10  # on P3: the FPN output, 8 tower convs, the classifier (biased)
    for got, baseline, reference in zip(ours, direct, exact):
        error, direct_error = (got - reference).norm(), (baseline - reference).norm()
        assert error <= 1.5 * direct_error + 2e-6 * reference.norm(), (
            float(error),
            float(direct_error),
        )
