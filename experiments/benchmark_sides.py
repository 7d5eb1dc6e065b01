"""The parts every detector pair of ``experiments.benchmark`` shares.

A :class:`Pair` holds two :class:`Side`s (detfn, torchvision), each a train step (forward,
backward, optimizer update), an inference (forward and post-processing) and a weight restore,
plus a :class:`Probe` that records the work the side did, so that the benchmark can refuse
unequal comparisons. ``count_calls`` and ``scoped_nms`` install the NMS-candidate counters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from detfn.engine import RunnerConfig, initial_state, make_train_step
from detfn.engine.optim import SGDConfig
from detfn.models.functional import detector_loss_fn, detector_predict_fn, norm_param_names, split
from detfn.registry import build
from detfn.structures import Batch

__all__ = [
    "RESNET_CHANNELS",
    "BenchSettings",
    "Pair",
    "Probe",
    "Side",
    "apply_layout",
    "candidates_per_call",
    "count_calls",
    "make_pair",
    "multiclass_candidates",
    "scoped_nms",
]

# C2-C5 channels of the basic-block ResNets (the FPN configs default to the bottleneck ones)
RESNET_CHANNELS = {18: (64, 128, 256, 512), 34: (64, 128, 256, 512)}


@dataclass(frozen=True)
class BenchSettings:
    depth: int
    num_classes: int
    image_size: tuple[int, int]
    sampling_ratio: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    layout: str = "as-shipped"
    """"as-shipped": each library's own activation layout (detfn: ``DetectorConfig.channels_last``
    "auto"; torchvision: NCHW); "both-nhwc" / "both-nchw": the same on both sides, so that the
    ratio measures the code apart from the layout."""


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
    model: nn.Module


@dataclass
class Pair:
    detfn: Side
    torchvision: Side
    title: str


def _autocast(settings: BenchSettings):
    enabled = settings.autocast_dtype is not None
    return torch.autocast(settings.device.type, dtype=settings.autocast_dtype, enabled=enabled)


def multiclass_candidates(boxes, scores, mask, score_thr, *args, **kwargs) -> list[int]:
    """(box, class) pairs above ``score_thr`` per image: Tensor[B, N, C] scores, [B, N] mask."""
    return ((scores > score_thr) & mask[..., None]).sum((1, 2)).tolist()


def count_calls(module, attr: str, probe: Probe, count: Callable[..., list[int]]) -> None:
    """Wrap ``module.attr`` (once per process) so that each call adds ``count(*args)`` to the
    ``nms_candidates`` of every registered probe whose ``nms_scope`` is on."""
    fn = getattr(module, attr)
    if getattr(fn, "_bench_counters", None) is None:
        original = fn

        @functools.wraps(original)
        def counted(*args, **kwargs):
            for p, c in counted._bench_counters:
                if p.nms_scope:
                    p.add("nms_candidates", c(*args, **kwargs))
            return original(*args, **kwargs)

        counted._bench_counters = []
        setattr(module, attr, counted)
        fn = counted
    fn._bench_counters.append((probe, count))


def scoped_nms(probe: Probe, fn: Callable) -> Callable:
    """``fn`` with ``probe.nms_scope`` on while it runs (torchvision's post-processing)."""

    @functools.wraps(fn)
    def scoped(*args, **kwargs):
        probe.nms_scope = True
        try:
            return fn(*args, **kwargs)
        finally:
            probe.nms_scope = False

    return scoped


def candidates_per_call(boxes, *args, **kwargs) -> list[int]:
    """torchvision calls ``batched_nms`` once per image: its candidates are one count."""
    return [boxes.shape[0]]


def make_pair(
    model: nn.Module,
    reference: nn.Module,
    s: BenchSettings,
    batch: Batch,
    probes: tuple[Probe, Probe],
    name: str,
    label_offset: int,
) -> Pair:
    """The two sides of ``model`` (detfn) and ``reference`` (torchvision), probes installed,
    activations in ``s.layout``; ``label_offset``: 1 where torchvision's class 0 is the
    background."""
    apply_layout(model, reference, s.layout)
    return Pair(
        _detfn_side(model, s, batch, probes[0]),
        _torchvision_side(reference, s, batch, probes[1], label_offset),
        f"{name} R-{s.depth}-FPN",
    )


def apply_layout(model: nn.Module, reference: nn.Module, layout: str) -> None:
    """In place: ``"both-nhwc"`` runs both sides channels-last (detfn's
    ``channels_last="always"``; torchvision's convolution weights in channels-last format, which
    mkldnn follows), ``"both-nchw"`` both in NCHW; ``"as-shipped"`` changes nothing."""
    if layout == "as-shipped":
        return
    if layout not in ("both-nhwc", "both-nchw"):
        raise ValueError(f"layout must be as-shipped, both-nhwc or both-nchw, got {layout!r}")
    nhwc = layout == "both-nhwc"
    model.channels_last = "always" if nhwc else "never"
    reference.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def _detfn_side(model: nn.Module, s: BenchSettings, batch: Batch, probe: Probe) -> Side:
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
    return Side(train_step, infer, restore, probe, model)


def _torchvision_side(
    model: nn.Module, s: BenchSettings, batch: Batch, probe: Probe, label_offset: int = 1
) -> Side:
    """``label_offset``: 1 where torchvision's class 0 is the background (FasterRCNN)."""
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    images = list(batch.images)
    targets = [
        {
            "boxes": batch.boxes[i][batch.box_mask[i]],
            "labels": batch.labels[i][batch.box_mask[i]] + label_offset,
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
    return Side(train_step, infer, restore, probe, model)
