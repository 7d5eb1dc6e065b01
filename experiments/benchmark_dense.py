"""RetinaNet and FCOS pairs of ``experiments.benchmark``: detfn and torchvision, same weights.

torchvision's dense assemblies (ResNet with FrozenBatchNorm, C3-C5 into the FPN, P6 from P5,
ReLU before P7) against detfn configs made equal: detfn's unrounded octave anchors copied into
torchvision's RetinaNet, detfn's FCOS head under ``torchvision_fcos_head()``. Work counters:
positive anchors (points) per image at training, candidates entering the final NMS per image at
inference. ``tests/experiments/test_dense_pairs_compute_the_same.py`` checks that both sides
then give the same losses and detections.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from detfn.config import override
from detfn.models.anchors import base_anchors
from detfn.models.backbones import ResNetConfig
from detfn.models.dense_heads.fcos_head import torchvision_fcos_head
from detfn.models.detectors import FCOS_R50_CAFFE_FPN_GN_HEAD, RETINANET_R50_FPN
from detfn.registry import build
from detfn.structures import Batch
from experiments.benchmark_sides import (
    RESNET_CHANNELS,
    BenchSettings,
    Pair,
    Probe,
    candidates_per_call,
    count_calls,
    make_pair,
    multiclass_candidates,
    scoped_nms,
)
from experiments.torchvision_weights import (
    fcos_to_detfn,
    load_torchvision_weights,
    retinanet_to_detfn,
    torchvision_fcos,
    torchvision_retinanet,
)

__all__ = ["fcos_models", "fcos_pair", "retinanet_models", "retinanet_pair"]


def _probe_detfn_dense(model: nn.Module, probe: Probe, batch_size: int) -> None:
    """Count positive anchors at training and NMS candidates per image at inference of a
    detfn dense detector: its one ``batched_nms`` is keyed by ``image * num_classes + label``."""
    import detfn.models.dense_heads.anchor_head as anchor_head

    head = model.bbox_head
    targets = head.targets

    @functools.wraps(targets)
    def counted_targets(*args, **kwargs):
        out = targets(*args, **kwargs)
        probe.add("positives", (out.box_weights > 0).sum(1).tolist())
        return out

    head.targets = counted_targets
    num_classes = head.num_classes

    def per_image(boxes, scores, idxs, *args, **kwargs) -> list[int]:
        return torch.bincount(idxs // num_classes, minlength=batch_size).tolist()

    count_calls(anchor_head, "batched_nms", probe, per_image)


def _probe_torchvision_dense(model: nn.Module, probe: Probe) -> None:
    """The same counters on torchvision's RetinaNet: matcher calls (one per image) and the
    per-image ``batched_nms`` inside ``postprocess_detections``."""
    from torchvision.ops import boxes as box_ops

    matcher = model.proposal_matcher

    def counted_matcher(quality):
        matches = matcher(quality)
        probe.add("positives", [int((matches >= 0).sum())])
        return matches

    model.proposal_matcher = counted_matcher
    model.postprocess_detections = scoped_nms(probe, model.postprocess_detections)
    count_calls(box_ops, "batched_nms", probe, candidates_per_call)


def _detfn_retinanet_config(s: BenchSettings):
    cfg = override(RETINANET_R50_FPN, "backbone.depth", s.depth)
    if s.depth in RESNET_CHANNELS:
        cfg = override(cfg, "neck.in_channels", RESNET_CHANNELS[s.depth])
    return override(
        cfg,
        {
            "backbone.norm": "FrozenBN",  # torchvision's detection ResNets freeze BatchNorm
            "num_classes": s.num_classes,
            "neck.add_extra_convs": "on_output",  # torchvision: P6 from P5, ReLU before P7
            "neck.relu_before_extra_convs": True,
        },
    )


def retinanet_models(s: BenchSettings) -> tuple[nn.Module, nn.Module]:
    """(detfn, torchvision) RetinaNets with torchvision's seeded weights, on the CPU."""
    torch.manual_seed(0)
    cfg = _detfn_retinanet_config(s)
    anchors = base_anchors(cfg.bbox_head.anchor_generator)
    reference = torchvision_retinanet(s.depth, s.num_classes, s.image_size, anchors)
    _redraw_class_logits(reference)
    model = build(cfg)
    load_torchvision_weights(model, reference, retinanet_to_detfn)
    return model, reference


@torch.no_grad()
def _redraw_class_logits(reference: nn.Module) -> None:
    """Class logits with std 0.05 and no bias, so that scores sit around 0.5: with the 0.01
    prior bias no candidate would pass the test threshold and inference would skip the top-k,
    decoding and NMS that it is meant to time."""
    logits = reference.head.classification_head.cls_logits
    nn.init.normal_(logits.weight, std=0.05)
    nn.init.zeros_(logits.bias)


def retinanet_pair(s: BenchSettings, batch: Batch) -> Pair:
    """detfn's RetinaNet and torchvision's RetinaNet with the same weights."""
    model, reference = retinanet_models(s)
    reference.to(s.device)
    model.to(s.device)
    detfn_probe, tv_probe = Probe(), Probe()
    _probe_detfn_dense(model, detfn_probe, len(batch))
    _probe_torchvision_dense(reference, tv_probe)
    return make_pair(model, reference, s, batch, (detfn_probe, tv_probe), "RetinaNet", 0)


def _detfn_fcos_config(s: BenchSettings):
    """detfn's FCOS under torchvision's settings (``torchvision_fcos_head``), pytorch-style
    ResNet with FrozenBN, FPN with P6 from P5 and a ReLU before P7."""
    cfg = override(
        FCOS_R50_CAFFE_FPN_GN_HEAD,
        {
            "backbone": ResNetConfig(depth=s.depth, norm="FrozenBN"),
            "bbox_head": torchvision_fcos_head(),
            "num_classes": s.num_classes,
        },
    )
    if s.depth in RESNET_CHANNELS:
        cfg = override(cfg, "neck.in_channels", RESNET_CHANNELS[s.depth])
    return cfg


def fcos_models(s: BenchSettings) -> tuple[nn.Module, nn.Module]:
    """(detfn, torchvision) FCOS with torchvision's seeded weights, on the CPU."""
    torch.manual_seed(0)
    reference = torchvision_fcos(s.depth, s.num_classes, s.image_size)
    _redraw_class_logits(reference)
    model = build(_detfn_fcos_config(s))
    load_torchvision_weights(model, reference, fcos_to_detfn)
    return model, reference


def fcos_pair(s: BenchSettings, batch: Batch) -> Pair:
    """detfn's FCOS and torchvision's FCOS with the same weights."""
    model, reference = fcos_models(s)
    reference.to(s.device)
    model.to(s.device)
    detfn_probe, tv_probe = Probe(), Probe()
    _probe_detfn_fcos(model, detfn_probe)
    _probe_torchvision_fcos(reference, tv_probe)
    return make_pair(model, reference, s, batch, (detfn_probe, tv_probe), "FCOS", 0)


def _probe_detfn_fcos(model: nn.Module, probe: Probe) -> None:
    """Positive points at training and NMS candidates per image of detfn's FCOS."""
    import detfn.models.dense_heads.centerness_predict as centerness_predict

    head = model.bbox_head
    targets = head.targets

    @functools.wraps(targets)
    def counted_targets(*args, **kwargs):
        out = targets(*args, **kwargs)
        probe.add("positives", (out[1].assigned > 0).sum(1).tolist())
        return out

    head.targets = counted_targets
    count_calls(centerness_predict, "multiclass_nms", probe, multiclass_candidates)


def _probe_torchvision_fcos(model: nn.Module, probe: Probe) -> None:
    """The same counters on torchvision's FCOS: its head's loss receives the per-image point
    assignment (-1: negative), and ``postprocess_detections`` runs one NMS per image."""
    from torchvision.ops import boxes as box_ops

    compute_loss = model.head.compute_loss

    def counted_loss(targets, head_outputs, anchors, matched_idxs):
        probe.add("positives", [int((m >= 0).sum()) for m in matched_idxs])
        return compute_loss(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = counted_loss
    model.postprocess_detections = scoped_nms(probe, model.postprocess_detections)
    count_calls(box_ops, "batched_nms", probe, candidates_per_call)
