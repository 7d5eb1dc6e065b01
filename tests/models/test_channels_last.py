"""``DetectorConfig.channels_last``: which layout the features run in, and that NHWC changes
nothing but convolution round-off where ``"auto"`` chooses it.

"auto" must pick NHWC on the CPU only where no norm layer computes statistics (PyTorch's NHWC CPU
kernels of training-mode BatchNorm and of GroupNorm are far less accurate than the NCHW ones,
which the last test measures), and the NHWC detector must then give the losses, gradients and
detections of the NCHW one.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detfn.apis import (
    FASTER_RCNN_R50_FPN_1X_COCO,
    FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO,
    bccd_cpu_preset,
    fcos_bccd_preset,
)
from detfn.config import override
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.ops import conv_backend
from detfn.registry import build
from experiments.benchmark import BenchArgs, synthetic_batch

R18_NECK = (64, 128, 256, 512)


def frozen_bn_faster_rcnn(channels_last: str):
    """Faster R-CNN R-18-FPN as the benchmark builds it: FrozenBN, 3 classes."""
    torch.manual_seed(0)
    return build(frozen_bn_faster_rcnn_config(channels_last))


def frozen_bn_faster_rcnn_config(channels_last: str):
    return override(
        FASTER_RCNN_R50_FPN_1X_COCO.model,
        {
            "backbone.depth": 18,
            "backbone.norm": "FrozenBN",
            "neck.in_channels": R18_NECK,
            "num_classes": 3,
            "class_names": None,
            "channels_last": channels_last,
        },
    )


def is_nhwc(feats) -> bool:
    return all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)


def small_batch():
    return synthetic_batch(BenchArgs(size=(128, 160), num_classes=3, boxes_per_image=4), "cpu")


def test_auto_layout_follows_the_norm_layers():
    images = small_batch().images
    frozen = frozen_bn_faster_rcnn("auto").train()
    assert is_nhwc(frozen.features(images))  # FrozenBN is a fixed affine map
    trainable = build(bccd_cpu_preset().model)  # BatchNorm with batch statistics
    assert not is_nhwc(trainable.train().features(images))
    assert is_nhwc(trainable.eval().features(images))  # running statistics: a fixed map
    group_norm = build(fcos_bccd_preset().model).eval()  # GroupNorm towers
    assert not is_nhwc(group_norm.features(images))  # the heads take NCHW (next test)
    assert not is_nhwc(frozen_bn_faster_rcnn("never").features(images))
    always = build(override(bccd_cpu_preset().model, "channels_last", "always"))
    assert is_nhwc(always.train().features(images))


def test_a_fixed_backbone_under_group_norm_towers_runs_nhwc_up_to_the_head():
    """FCOS's recipe: eval-mode BN backbone, GroupNorm head. The backbone and neck run NHWC, and
    the head, whose GroupNorm kernels are inaccurate in NHWC, gets NCHW features."""
    cfg = override(
        FCOS_R50_CAFFE_FPN_GN_HEAD_1X_COCO.model,
        {"backbone.depth": 18, "neck.in_channels": R18_NECK, "num_classes": 3, "class_names": None},
    )
    torch.manual_seed(0)
    model = build(cfg).train()
    seen: dict[str, list[bool]] = {"neck": [], "group_norm_nchw": []}
    model.neck.register_forward_hook(lambda m, args, out: seen["neck"].append(is_nhwc(out)))
    for module in model.bbox_head.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.register_forward_pre_hook(
                lambda m, args: seen["group_norm_nchw"].append(args[0].is_contiguous())
            )
    batch = small_batch()
    losses = model.loss(batch.images, batch)
    assert seen["neck"] == [True]
    assert len(seen["group_norm_nchw"]) == 8 * 5 and all(seen["group_norm_nchw"])  # 8 GNs, 5 levels
    reference = build(override(cfg, "channels_last", "never")).train()
    reference.load_state_dict(model.state_dict())
    for name, value in reference.loss(batch.images, batch).items():
        torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-6)


def losses_grads_detections(layout: str, dtype: torch.dtype):
    model = frozen_bn_faster_rcnn(layout).to(dtype)
    batch = small_batch()
    batch = dataclasses.replace(batch, images=batch.images.to(dtype))
    params, buffers = split(model)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    total, losses = detector_loss_fn(model, seed=3)(params, buffers, batch)
    grads = torch.autograd.grad(total, [params[n] for n in GRAD_NAMES])
    dets = detector_predict_fn(model)(params, buffers, batch.images, batch.metas)
    values = [v.detach().double() for v in losses.values()] + [g.double() for g in grads]
    return values, dets


GRAD_NAMES = (
    "backbone.layer2.0.conv1.weight",
    "neck.fpn_convs.0.weight",
    "rpn_head.rpn_conv.weight",
    "roi_head.bbox_head.shared_fcs.0.weight",
)


@pytest.fixture
def one_thread():
    """One torch thread: with two, round-off differences may reorder near-tied proposals, and
    the comparison would then measure a different sample, not the layout's error."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_nhwc_gives_the_losses_gradients_and_detections_of_nchw(one_thread):
    """Against float64: NHWC's float32 error in each loss and gradient is of the order of
    NCHW's (round-off of other convolution kernels, nothing else), and the detections agree."""
    exact, _ = losses_grads_detections("never", torch.float64)
    with conv_backend("direct"):  # the layouts' error alone; Winograd's: test_winograd_accuracy
        nchw, dets_nchw = losses_grads_detections("never", torch.float32)
        nhwc, dets_nhwc = losses_grads_detections("always", torch.float32)
    for ref, cf, cl in zip(exact, nchw, nhwc):
        error_cf, error_cl = (cf - ref).abs().max(), (cl - ref).abs().max()
        assert error_cl <= 4 * error_cf + 1e-6 * ref.abs().max(), (float(error_cl), float(error_cf))
    for ours, ref in zip(dets_nhwc, dets_nchw):
        assert len(ours.scores) == len(ref.scores) > 0
        torch.testing.assert_close(ours.scores, ref.scores, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.boxes, ref.boxes, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_why_auto_keeps_statistics_layers_in_nchw(norm):
    """PyTorch's NHWC CPU kernels of BatchNorm (training) and GroupNorm: several times the NCHW
    error against float64 on activations of mean 50, std 3. If a torch release fixes them,
    this test says so, and ``"auto"`` can be widened."""
    x = torch.randn(2, 64, 64, 80, generator=torch.Generator().manual_seed(0)) * 3 + 50

    def normed(layout: torch.memory_format, dtype: torch.dtype) -> torch.Tensor:
        layer = torch.nn.BatchNorm2d(64) if norm == "batch" else torch.nn.GroupNorm(32, 64)
        return layer.to(dtype).train()(x.to(dtype).contiguous(memory_format=layout)).double()

    exact = normed(torch.contiguous_format, torch.float64)
    nchw = (normed(torch.contiguous_format, torch.float32) - exact).abs().max()
    nhwc = (normed(torch.channels_last, torch.float32) - exact).abs().max()
    assert nhwc > 4 * nchw, (float(nhwc), float(nchw))
