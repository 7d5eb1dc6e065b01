"""The detector pairs ``experiments.benchmark`` compares: detfn and torchvision, same weights.

Each entry of :data:`PAIRS` builds a :class:`Pair` (see ``experiments.benchmark_sides``) whose
probes count the work each side did: for Faster R-CNN (here) the proposals kept, RoIs sampled
and detection candidates entering the final NMS; for RetinaNet and FCOS
(``experiments.benchmark_dense``) positive anchors or points and NMS candidates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from detfn.apis import FASTER_RCNN_R50_FPN_1X_COCO
from detfn.config import override
from detfn.registry import build
from detfn.structures import Batch
from experiments.benchmark_dense import fcos_pair, retinanet_pair
from experiments.benchmark_sides import (
    RESNET_CHANNELS,
    BenchSettings,
    Pair,
    Probe,
    Side,
    candidates_per_call,
    count_calls,
    make_pair,
    multiclass_candidates,
    scoped_nms,
)
from experiments.torchvision_weights import (
    INTEGER_CORNER_RATIOS,
    load_torchvision_weights,
    torchvision_faster_rcnn,
)

__all__ = ["PAIRS", "BenchSettings", "Pair", "Probe", "Side", "faster_rcnn_pair"]


def _detfn_faster_rcnn_config(s: BenchSettings):
    cfg = override(FASTER_RCNN_R50_FPN_1X_COCO.model, "backbone.depth", s.depth)
    if s.depth in RESNET_CHANNELS:
        cfg = override(cfg, "neck.in_channels", RESNET_CHANNELS[s.depth])
    return override(
        cfg,
        {
            "backbone.norm": "FrozenBN",  # torchvision's detection ResNets freeze BatchNorm
            "rpn_head.anchor_generator.ratios": INTEGER_CORNER_RATIOS,
            "num_classes": s.num_classes,
            "class_names": None,
            "roi_head.bbox_roi_extractor.sampling_ratio": s.sampling_ratio,
            "roi_head.bbox_roi_extractor.aligned": False,  # torchvision has no aligned RoIAlign
            # torchvision's RPN drops boxes under rpn.min_size = 1e-3 before its NMS; mmdetection's
            # min_bbox_size is the same filter (strict >, against torchvision's >=: only a box of
            # exactly 1e-3 px would differ)
            "rpn_head.train_proposal.min_bbox_size": TORCHVISION_RPN_MIN_SIZE,
            "rpn_head.test_proposal.min_bbox_size": TORCHVISION_RPN_MIN_SIZE,
        },
    )


# torchvision's defaults: RPN(min_size=1e-3) and the 1e-2 px hard-coded in
# RoIHeads.postprocess_detections (boxes narrower or shorter are removed before the final NMS)
TORCHVISION_RPN_MIN_SIZE = 1e-3
TORCHVISION_ROI_MIN_SIZE = 1e-2


def drop_small_boxes(bbox_head: nn.Module, min_size: float = TORCHVISION_ROI_MIN_SIZE) -> None:
    """Give detfn's R-CNN box head (this instance only) torchvision's filter before the final
    NMS: a (box, class) pair whose clipped box is narrower or shorter than ``min_size`` gets
    score 0, below any ``score_thr``, so it never enters the NMS - as torchvision's
    ``remove_small_boxes`` (keeps ``>= min_size``) after its score filter. The benchmark's
    equal setting only: mmdetection has no such filter in the R-CNN stage, and detfn pays for
    it here. ``decode`` gives scores (Tensor[K, C + 1], background last), boxes (Tensor[K, C, 4]).
    """
    decode = bbox_head.decode

    @functools.wraps(decode)
    def decode_dropping_small(*args, **kwargs):
        scores, boxes = decode(*args, **kwargs)
        big = ((boxes[..., 2:] - boxes[..., :2]) >= min_size).all(-1)  # [K, C]
        foreground = scores[:, :-1].where(big, 0.0)
        return torch.cat([foreground, scores[:, -1:]], dim=1), boxes

    bbox_head.decode = decode_dropping_small


def _probe_detfn(model: nn.Module, probe: Probe) -> None:
    """Count proposals, sampled RoIs and NMS candidates of detfn's Faster R-CNN."""
    import detfn.models.roi_heads.standard as standard

    proposals = model.rpn_head.proposals

    @functools.wraps(proposals)
    def counted_proposals(*args, **kwargs):
        boxes, scores, mask = proposals(*args, **kwargs)
        probe.add("proposals", mask.sum(1).tolist())
        return boxes, scores, mask

    model.rpn_head.proposals = counted_proposals

    def count_rois(module, args):
        if module.training:
            rois = args[1]
            probe.add("rois", torch.bincount(rois[:, 0].long()).tolist())

    model.roi_head.bbox_roi_extractor.register_forward_pre_hook(count_rois)
    count_calls(standard, "multiclass_nms", probe, multiclass_candidates)


def _probe_torchvision(model: nn.Module, probe: Probe) -> None:
    """The same counters on torchvision's FasterRCNN (hooks and a batched_nms wrapper)."""
    from torchvision.ops import boxes as box_ops

    model.rpn.register_forward_hook(
        lambda module, args, out: probe.add("proposals", [len(b) for b in out[0]])
    )

    def count_rois(module, args):
        if model.training:
            probe.add("rois", [len(p) for p in args[1]])

    model.roi_heads.box_roi_pool.register_forward_pre_hook(count_rois)
    model.roi_heads.postprocess_detections = scoped_nms(
        probe, model.roi_heads.postprocess_detections
    )
    count_calls(box_ops, "batched_nms", probe, candidates_per_call)


@torch.no_grad()
def _spread_objectness(reference: nn.Module, batch: Batch, target_std: float = 2.0) -> None:
    """Scale the RPN's objectness weights so that its logits on ``batch`` have ``target_std``:
    scores spread enough that the ranking does not hinge on round-off, yet far from sigmoid's
    saturation, where ties would let the two libraries' NMS keep different boxes."""
    head = reference.rpn.head
    feats = list(reference.backbone(batch.images).values())
    logits = torch.cat([head(feats)[0][i].flatten() for i in range(len(feats))])
    head.cls_logits.weight.mul_(target_std / logits.std().clamp(min=1e-12))


def faster_rcnn_pair(s: BenchSettings, batch: Batch) -> Pair:
    """detfn's Faster R-CNN and torchvision's FasterRCNN with torchvision's seeded weights."""
    torch.manual_seed(0)
    reference = torchvision_faster_rcnn(
        s.depth, s.num_classes, s.image_size, sampling_ratio=s.sampling_ratio
    )
    reference.to(s.device)
    _spread_objectness(reference, batch)
    model = build(_detfn_faster_rcnn_config(s))
    drop_small_boxes(model.roi_head.bbox_head)
    load_torchvision_weights(model, reference)
    model.to(s.device)
    detfn_probe, tv_probe = Probe(), Probe()
    _probe_detfn(model, detfn_probe)
    _probe_torchvision(reference, tv_probe)
    return make_pair(model, reference, s, batch, (detfn_probe, tv_probe), "Faster R-CNN", 1)


PAIRS: dict[str, Callable[[BenchSettings, Batch], Pair]] = {
    "faster_rcnn": faster_rcnn_pair,
    "retinanet": retinanet_pair,
    "fcos": fcos_pair,
}
