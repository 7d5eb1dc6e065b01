"""The detector interface: what every detector config and module provides.

A detector config subclasses :class:`DetectorConfig`, which holds what belongs to the detector
as a whole: ``num_classes`` and, optionally, the class names, which then travel with the model
into ``config.json`` and the checkpoint meta (evaluation maps labels to a dataset's categories by
these names). Parts read ``num_classes`` and the neck's width from the build context, never
from fields of their own.

A detector module subclasses :class:`Detector` and defines two methods:

* ``loss(images, batch, *, generator) -> dict[str, Tensor]``: named losses (and metrics such as
  ``acc``) of a batch; every key containing ``loss`` is summed into the total;
  ``generator`` is the only randomness the loss may draw from;
* ``predict(images, metas) -> list[ImageDetections]``: per image, detections in original-image
  pixels.

``forward`` only dispatches to them, so :func:`torch.func.functional_call` (which calls
``forward``) reaches both; :mod:`detfn.models.functional` relies on this interface alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from detfn.config import Config, check, check_positive
from detfn.models.backbones.norm import computes_statistics
from detfn.structures import Batch, ImageDetections, ImageMeta

__all__ = ["Detector", "DetectorConfig", "sum_losses"]


@dataclass(frozen=True)
class DetectorConfig(Config):
    """Base of every detector config.

    Attributes:
        num_classes: foreground classes; handed to every head as build context.
        class_names: the name of each class, in label order, or None (then evaluation falls
            back to the dataset's own class order and says so).
        channels_last: when the images enter the backbone in channels-last (NHWC) layout, so
            that every activation after them is NHWC (weights, gradients and the train state
            keep their layout: checkpoints and the gradient all-reduce are unaffected).
            ``"auto"``: on the CPU, the backbone and neck run NHWC whenever none of their
            layers computes statistics of its input (every BatchNorm frozen or in eval mode,
            no GroupNorm), and the heads too when none of theirs does; otherwise the neck's
            features are copied to NCHW before the heads. mkldnn's NHWC convolutions take
            0.85x the time of NCHW (ResNet-50-FPN forward, 2 x 512x640; 0.88x forward +
            backward) and change nothing but their own float round-off, whereas PyTorch's
            NHWC CPU kernels of training-mode BatchNorm and of GroupNorm compute their
            statistics 30x and 1500x less accurately (float32, activations of mean 50 and
            std 3). So a from-scratch preset with trainable BatchNorm trains in NCHW and
            predicts in NHWC, and a FrozenBN backbone under GroupNorm towers (FCOS) runs its
            backbone and neck in NHWC and its head in NCHW. ``"always"`` / ``"never"`` force
            one layout everywhere (GPUs: ``"auto"`` keeps NCHW, not measured).
    """

    num_classes: int = 80
    class_names: tuple[str, ...] | None = None
    channels_last: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        check_positive(self, "num_classes")
        if self.class_names is not None:
            check(
                self,
                "class_names",
                len(self.class_names) == self.num_classes,
                f"has {len(self.class_names)} names but num_classes={self.num_classes}",
            )
            check(
                self,
                "class_names",
                len(set(self.class_names)) == len(self.class_names),
                f"has duplicate names: {self.class_names}",
            )


def sum_losses(losses: dict[str, Tensor]) -> Tensor:
    """Total loss: the sum of every entry whose name contains ``loss`` (``acc`` is not summed)."""
    return sum(value for name, value in losses.items() if "loss" in name)


class Detector(nn.Module):
    """Base of detector modules: ``loss`` and ``predict``, reached through ``forward``.

    The assemblies keep a ``backbone`` and a ``neck``; :meth:`features` runs them.
    """

    backbone: nn.Module
    neck: nn.Module
    channels_last: str = "auto"  # DetectorConfig.channels_last, set by the builders

    def features(self, images: Tensor) -> tuple[Tensor, ...]:
        """Neck features of a padded image batch ``Tensor[B, 3, H, W]``, finest first, in the
        layout the heads take (see ``DetectorConfig.channels_last``: the first convolution
        follows its input's layout and every later op keeps it, so the layout is set here)."""
        nhwc = self.uses_channels_last(images.device, (self.backbone, self.neck))
        if nhwc:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = tuple(self.neck(self.backbone(images)))
        if nhwc and not self.uses_channels_last(images.device):
            feats = tuple(f.contiguous() for f in feats)  # a head's GroupNorm: NCHW kernels
        return feats

    def uses_channels_last(
        self, device: torch.device, parts: Sequence[nn.Module] | None = None
    ) -> bool:
        """Whether ``parts`` (default: the whole detector) run channels-last on ``device`` (see
        ``DetectorConfig.channels_last``); ``"auto"`` reads the norm layers' current modes."""
        if self.channels_last != "auto":
            return self.channels_last == "always"
        modules = (m for part in (parts or (self,)) for m in part.modules())
        return device.type == "cpu" and not any(computes_statistics(m) for m in modules)

    def loss(
        self, images: Tensor, batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def predict(self, images: Tensor, metas: Sequence[ImageMeta]) -> list[ImageDetections]:
        raise NotImplementedError(f"{type(self).__name__} must define predict()")

    def forward(
        self,
        images: Tensor,
        data: Batch | Sequence[ImageMeta],
        mode: Literal["loss", "predict"] = "loss",
        generator: torch.Generator | None = None,
    ):
        """``mode="loss"``: :meth:`loss` of the batch ``data``; ``"predict"``: :meth:`predict`
        of the images described by the metas ``data``."""
        if mode == "loss":
            if not isinstance(data, Batch):
                raise TypeError(f"{type(self).__name__}(mode='loss') needs the Batch with targets")
            return self.loss(images, data, generator=generator)
        if mode == "predict":
            return self.predict(images, data)
        raise ValueError(f"mode must be 'loss' or 'predict', got {mode!r}")


def build_backbone_and_neck(cfg) -> tuple[nn.Module, nn.Module]:
    """Build ``cfg.backbone`` and ``cfg.neck``; the neck must take the backbone's channels."""
    from detfn.registry import build

    backbone = build(cfg.backbone)
    channels = tuple(backbone.out_channels)
    if tuple(cfg.neck.in_channels) != channels:
        raise ValueError(
            f"{type(cfg).__name__}.neck.in_channels={cfg.neck.in_channels} does not match the "
            f"backbone's output channels {channels}"
        )
    return backbone, build(cfg.neck)


def check_levels(cfg, head_field: str, strides: Sequence[int]) -> None:
    """One prior stride per neck output (a config error, not a shape error at the first step)."""
    check(
        cfg,
        head_field,
        len(strides) == cfg.neck.num_outs,
        f"needs one stride per neck output (neck.num_outs={cfg.neck.num_outs}), got {strides}",
    )
