"""The detector pairs ``experiments.benchmark`` compares: detfn and torchvision, same weights.

Each entry of :data:`PAIRS` builds a :class:`Pair`: both sides' train step (forward, backward,
optimizer update), inference (forward and post-processing) and a weight restore, plus a
:class:`Probe` that records the work each side did (proposals kept, RoIs sampled, detection
candidates entering the final NMS) so that the benchmark can refuse unequal comparisons.
RetinaNet and FCOS become entries here once detfn has them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from detfn.apis import FASTER_RCNN_R50_FPN_1X_COCO
from detfn.config import override
from detfn.engine import RunnerConfig, initial_state, make_train_step
from detfn.engine.optim import SGDConfig, norm_param_names
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from detfn.structures import Batch
from experiments.torchvision_weights import (
    INTEGER_CORNER_RATIOS,
    load_torchvision_weights,
    torchvision_faster_rcnn,
)

__all__ = ["PAIRS", "BenchSettings", "Pair", "Probe", "Side"]

_RESNET_CHANNELS = {18: (64, 128, 256, 512), 34: (64, 128, 256, 512)}


@dataclass(frozen=True)
class BenchSettings:
    depth: int
    num_classes: int
    image_size: tuple[int, int]
    sampling_ratio: int
    device: torch.device
    autocast_dtype: torch.dtype | None


@dataclass
class Probe:
    """Work counters of the step being run, per image; ``reset`` before each step."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    nms_scope: bool = False

    def reset(self) -> None:
        self.counts = {}
        self.nms_scope = False

    def add(self, key: str, values: list[int]) -> None:
        self.counts.setdefault(key, []).extend(int(v) for v in values)


@dataclass
class Side:
    """One library's model behind three closures; ``restore`` is never timed."""

    train_step: Callable[[], None]
    infer: Callable[[], None]
    restore: Callable[[], None]
    probe: Probe


@dataclass
class Pair:
    detfn: Side
    torchvision: Side
    title: str


def _autocast(settings: BenchSettings):
    enabled = settings.autocast_dtype is not None
    return torch.autocast(settings.device.type, dtype=settings.autocast_dtype, enabled=enabled)


def _detfn_faster_rcnn_config(s: BenchSettings):
    cfg = override(FASTER_RCNN_R50_FPN_1X_COCO.model, "backbone.depth", s.depth)
    if s.depth in _RESNET_CHANNELS:
        cfg = override(cfg, "neck.in_channels", _RESNET_CHANNELS[s.depth])
    return override(
        cfg,
        {
            "backbone.norm": "FrozenBN",  # torchvision's detection ResNets freeze BatchNorm
            "rpn_head.anchor_generator.ratios": INTEGER_CORNER_RATIOS,
            "num_classes": s.num_classes,
            "class_names": None,
            "roi_head.bbox_roi_extractor.sampling_ratio": s.sampling_ratio,
            "roi_head.bbox_roi_extractor.aligned": False,  # torchvision has no aligned RoIAlign
        },
    )


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
    if getattr(standard.multiclass_nms, "_bench_probes", None) is None:
        original = standard.multiclass_nms

        @functools.wraps(original)
        def counted_nms(boxes, scores, mask, score_thr, *args, **kwargs):
            for p in counted_nms._bench_probes:
                if p.nms_scope:
                    p.add("nms_candidates", ((scores > score_thr) & mask[..., None]).sum((1, 2)))
            return original(boxes, scores, mask, score_thr, *args, **kwargs)

        counted_nms._bench_probes = []
        standard.multiclass_nms = counted_nms
    standard.multiclass_nms._bench_probes.append(probe)


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
    postprocess = model.roi_heads.postprocess_detections

    def scoped_postprocess(*args, **kwargs):
        probe.nms_scope = True
        try:
            return postprocess(*args, **kwargs)
        finally:
            probe.nms_scope = False

    model.roi_heads.postprocess_detections = scoped_postprocess
    if getattr(box_ops.batched_nms, "_bench_probes", None) is None:
        original = box_ops.batched_nms

        @functools.wraps(original)
        def counted_nms(boxes, *args, **kwargs):
            for p in counted_nms._bench_probes:
                if p.nms_scope:
                    p.add("nms_candidates", [boxes.shape[0]])
            return original(boxes, *args, **kwargs)

        counted_nms._bench_probes = []
        box_ops.batched_nms = counted_nms
    box_ops.batched_nms._bench_probes.append(probe)


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
    load_torchvision_weights(model, reference)
    model.to(s.device)
    return Pair(
        _detfn_side(model, s, batch),
        _torchvision_side(reference, s, batch),
        f"Faster R-CNN R-{s.depth}-FPN",
    )


def _detfn_side(model: nn.Module, s: BenchSettings, batch: Batch) -> Side:
    probe = Probe()
    _probe_detfn(model, probe)
    params, buffers = split(model)
    snapshot = {k: v.detach().clone() for k, v in params.items()}
    runner = RunnerConfig(optimizer=SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-4))
    optimizer = build(runner.optimizer, params=params, norm_names=norm_param_names(model))
    step = make_train_step(
        detector_loss_fn(model), autocast_dtype=s.autocast_dtype, device_type=s.device.type
    )
    predict = detector_predict_fn(model)
    holder = {}

    def restore():
        fresh = {k: v.clone() for k, v in snapshot.items()}
        holder["state"] = initial_state(runner, optimizer, fresh, buffers)

    def train_step():
        state = holder["state"]
        out = step(state, batch)
        optimizer.update(out["grads"], state.opt_state, state.params, state.hyper)

    def infer():
        probe.nms_scope = True
        with torch.no_grad(), _autocast(s):
            predict(holder["state"].params, buffers, batch.images, batch.metas)
        probe.nms_scope = False

    restore()
    return Side(train_step, infer, restore, probe)


def _torchvision_side(model: nn.Module, s: BenchSettings, batch: Batch) -> Side:
    probe = Probe()
    _probe_torchvision(model, probe)
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    images = list(batch.images)
    targets = [
        {
            "boxes": batch.boxes[i][batch.box_mask[i]],
            "labels": batch.labels[i][batch.box_mask[i]] + 1,
        }
        for i in range(len(batch))
    ]
    holder = {}

    def restore():
        model.load_state_dict(snapshot)
        params = [p for p in model.parameters() if p.requires_grad]
        holder["opt"] = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)

    def train_step():
        model.train()
        with _autocast(s):
            losses = model(images, targets)
        optimizer = holder["opt"]
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        model.eval()
        with _autocast(s):
            model(images)

    restore()
    return Side(train_step, infer, restore, probe)


PAIRS: dict[str, Callable[[BenchSettings, Batch], Pair]] = {"faster_rcnn": faster_rcnn_pair}
