"""FCOS head (mmdetection 2.x ``FCOSHead``, ``fcos_r50_caffe_fpn_gn-head_1x_coco``), batched.

Structure, shared by all levels: a classification tower and a regression tower, each
``stacked_convs`` x (3x3 conv, GroupNorm(32), ReLU); ``conv_cls`` (C logits), ``conv_reg``
(4 distances) and ``conv_centerness`` (1 logit, on the classification tower, or on the
regression tower with ``centerness_on_reg``); one learnable :class:`Scale` per level on the
regression output, which is then ``exp`` (pixels) or, with ``norm_on_bbox``, ``clamp(min=0)``
(units of the level's stride).

Loss (mmdetection's normalizers, one image batch at a time):

* focal loss over every point and class, divided by ``num_pos = max(#positives, 1)``;
* IoU (or GIoU) loss between the decoded predicted and target boxes of the positives, each
  weighted by its centerness target and divided by their sum (``centerness_weighted=False``
  divides the unweighted sum by ``num_pos`` instead, torchvision's choice);
* centerness BCE over the positives, divided by ``num_pos``.

Targets come from :func:`~detfn.models.dense_heads.fcos_targets.fcos_targets`; test-time
detections from :func:`~detfn.models.dense_heads.centerness_predict.predict_with_centerness`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detfn.config import check, check_positive
from detfn.models.dense_heads.anchor_head import flatten_levels
from detfn.models.dense_heads.base import DenseHead, DenseHeadConfig
from detfn.models.dense_heads.centerness_predict import (
    CenternessTestConfig,
    predict_with_centerness,
)
from detfn.models.dense_heads.fcos_targets import (
    INF,
    FCOSTargets,
    centerness_targets,
    fcos_targets,
    per_point,
)
from detfn.models.dense_heads.towers import (
    HeadNorm,
    Scale,
    conv_tower,
    init_head_convs_,
)
from detfn.models.distance_coder import DistancePointBBoxCoderConfig
from detfn.models.losses import CrossEntropyLossConfig, FocalLossConfig, GIoULossConfig
from detfn.models.losses.iou import IoULossConfig
from detfn.models.points import PointGeneratorConfig
from detfn.ops.winograd import Conv3x3
from detfn.registry import build, register
from detfn.structures import Batch, Detections

__all__ = [
    "FCOSHead",
    "FCOSHeadConfig",
    "FCOSOutputs",
    "build_fcos_head",
    "torchvision_fcos_head",
]

DEFAULT_REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))


@dataclass(frozen=True)
class FCOSHeadConfig(DenseHeadConfig):
    """mmdetection's ``fcos_r50_caffe_fpn_gn-head_1x_coco`` head, train and test settings included.

    ``in_channels`` and ``num_classes`` come from the build context. ``conv_bias=None`` is
    mmdetection's ``'auto'`` (a bias only without norm). The ``center-normbbox-centeronreg-giou``
    variant sets ``center_sampling``, ``norm_on_bbox``, ``centerness_on_reg``, ``conv_bias=True``,
    ``loss_bbox=GIoULossConfig()`` and ``test_cfg.iou_threshold=0.6``.
    """

    feat_channels: int = 256
    stacked_convs: int = 4
    norm: HeadNorm = "GN"
    conv_bias: bool | None = None
    prior_prob: float = 0.01
    prior_generator: PointGeneratorConfig = field(default_factory=PointGeneratorConfig)
    regress_ranges: tuple[tuple[float, float], ...] = DEFAULT_REGRESS_RANGES
    center_sampling: bool = False
    center_sample_radius: float = 1.5
    norm_on_bbox: bool = False
    centerness_on_reg: bool = False
    bbox_coder: DistancePointBBoxCoderConfig = field(default_factory=DistancePointBBoxCoderConfig)
    loss_cls: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: IoULossConfig | GIoULossConfig = field(default_factory=IoULossConfig)
    loss_centerness: CrossEntropyLossConfig = field(
        default_factory=lambda: CrossEntropyLossConfig(use_sigmoid=True)
    )
    centerness_weighted: bool = True
    test_cfg: CenternessTestConfig = field(default_factory=CenternessTestConfig)

    def __post_init__(self) -> None:
        check_positive(self, "feat_channels", "stacked_convs", "center_sample_radius")
        check(self, "prior_prob", 0.0 < self.prior_prob < 1.0, "must be in (0, 1)")
        check(self, "norm", self.norm in ("GN", "none"), f"must be 'GN' or 'none': {self.norm!r}")
        levels = len(self.prior_generator.strides)
        check(
            self,
            "regress_ranges",
            len(self.regress_ranges) == levels
            and all(len(r) == 2 and r[0] <= r[1] for r in self.regress_ranges),
            f"must be {levels} (lower, upper) pairs with lower <= upper, one per stride of "
            f"prior_generator {self.prior_generator.strides}, got {self.regress_ranges!r}",
        )
        check(
            self,
            "loss_centerness",
            self.loss_centerness.use_sigmoid,
            "must be a sigmoid loss (CrossEntropyLossConfig(use_sigmoid=True)): centerness is "
            "one logit per point",
        )


def torchvision_fcos_head() -> FCOSHeadConfig:
    """The settings under which :class:`FCOSHead` computes what torchvision's ``FCOS`` head does
    (``fcos_resnet50_fpn``), for comparisons with equal weights (mmdet-facts.md section 2.7).

    Points at ``(x * s, y * s)`` (``offset=0``); tower convs with bias; ReLU distances in stride
    units (torchvision has no per-level Scale: keep the scales at 1); centerness on the regression
    tower; center sampling (radius 1.5); ranges (0, 64) ... (512, inf), whose bounds torchvision
    makes strict (a point exactly on a bound is the one difference); GIoU (eps 1e-7) not
    weighted by centerness, divided by the positives; scores ``sqrt(cls * centerness)`` above
    0.2, NMS 0.6, 100 per image.
    """
    return FCOSHeadConfig(
        conv_bias=True,
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        center_sample_radius=1.5,
        prior_generator=PointGeneratorConfig(strides=(8, 16, 32, 64, 128), offset=0.0),
        regress_ranges=((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF)),
        loss_bbox=GIoULossConfig(eps=1e-7),
        centerness_weighted=False,
        test_cfg=CenternessTestConfig(
            nms_pre=1000,
            score_thr=0.2,
            iou_threshold=0.6,
            max_per_img=100,
            score_mode="geometric_mean",
        ),
    )


class FCOSOutputs(NamedTuple):
    """Raw head outputs, one entry per level.

    Attributes:
        cls_scores: Tensor[B, C, H, W] class logits.
        bbox_preds: Tensor[B, 4, H, W] distances ``(l, t, r, b)`` >= 0, in pixels, or in units
            of the level's stride with ``norm_on_bbox``.
        centernesses: Tensor[B, 1, H, W] centerness logits.
    """

    cls_scores: list[Tensor]
    bbox_preds: list[Tensor]
    centernesses: list[Tensor]


class FCOSHead(DenseHead):
    """The FCOS head; parameter names follow mmdetection (``cls_convs``, ``conv_cls``, ...)."""

    def __init__(self, cfg: FCOSHeadConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        tower = (in_channels, cfg.feat_channels, cfg.stacked_convs, cfg.norm, cfg.conv_bias)
        self.cls_convs = conv_tower(*tower)
        self.reg_convs = conv_tower(*tower)
        self.conv_cls = Conv3x3(cfg.feat_channels, num_classes)
        self.conv_reg = Conv3x3(cfg.feat_channels, 4)
        self.conv_centerness = Conv3x3(cfg.feat_channels, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in cfg.prior_generator.strides)
        init_head_convs_(self, self.conv_cls, cfg.prior_prob)
        self.prior_generator = build(cfg.prior_generator)
        self.coder = build(cfg.bbox_coder)
        self.loss_cls = build(cfg.loss_cls)
        self.loss_bbox = build(cfg.loss_bbox)
        self.loss_centerness = build(cfg.loss_centerness)

    def forward(self, feats: Sequence[Tensor]) -> FCOSOutputs:
        """:class:`FCOSOutputs` of the FPN levels ``feats`` (Tensor[B, in_channels, H, W] each)."""
        if len(feats) != len(self.scales):
            raise ValueError(
                f"FCOSHead got {len(feats)} feature maps but prior_generator.strides has "
                f"{len(self.scales)} levels"
            )
        out = FCOSOutputs([], [], [])
        for feat, scale in zip(feats, self.scales):
            cls_feat, reg_feat = self.cls_convs(feat), self.reg_convs(feat)
            distances = scale(self.conv_reg(reg_feat)).float()
            distances = distances.clamp(min=0) if self.cfg.norm_on_bbox else distances.exp()
            out.cls_scores.append(self.conv_cls(cls_feat))
            out.bbox_preds.append(distances)
            centerness_feat = reg_feat if self.cfg.centerness_on_reg else cls_feat
            out.centernesses.append(self.conv_centerness(centerness_feat))
        return out

    def _points(self, maps: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level points Tensor[n_l, 2] and their strides Tensor[n_l] for the output sizes."""
        sizes = [tuple(m.shape[-2:]) for m in maps]
        device = maps[0].device
        gen = self.prior_generator
        return gen.grid_points(sizes, device), gen.point_strides(sizes, device)

    def targets(self, outputs: FCOSOutputs, batch: Batch) -> tuple[Tensor, FCOSTargets]:
        """All points Tensor[N, 2] and their :class:`FCOSTargets` for ``batch``."""
        points, strides = self._points(outputs.cls_scores)
        counts = [p.shape[0] for p in points]
        points = torch.cat(points)
        ranges = per_point(self.cfg.regress_ranges, counts).to(points.device)
        radius = self.cfg.center_sample_radius if self.cfg.center_sampling else None
        targets = fcos_targets(
            points,
            torch.cat(strides),
            ranges,
            batch.boxes.to(points.dtype),
            batch.labels,
            batch.box_mask,
            self.num_classes,
            center_sample_radius=radius,
            norm_on_bbox=self.cfg.norm_on_bbox,
        )
        return points, targets

    def loss(
        self, feats: Sequence[Tensor], batch: Batch, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", "loss_centerness"}``; FCOS draws no random numbers."""
        del generator
        return self.loss_of_outputs(self(feats), batch)

    def loss_of_outputs(self, outputs: FCOSOutputs, batch: Batch) -> dict[str, Tensor]:
        """The losses of already computed head outputs (see the module docstring)."""
        points, targets = self.targets(outputs, batch)
        logits = flatten_levels(outputs.cls_scores, self.num_classes)  # [B, N, C]
        distances = flatten_levels(outputs.bbox_preds, 4)  # [B, N, 4]
        centerness = flatten_levels(outputs.centernesses, 1).squeeze(2)  # [B, N]
        positive = targets.assigned > 0  # [B, N]
        num_pos = positive.sum().clamp(min=1).to(logits.dtype)
        loss_cls = self.loss_cls(
            logits.reshape(-1, self.num_classes), targets.labels.reshape(-1), avg_factor=num_pos
        )
        pos_points = points.expand(positive.shape[0], -1, -1)[positive]  # [P, 2]
        pos_targets = targets.distances[positive]  # [P, 4]
        ctr_targets = centerness_targets(pos_targets)  # [P]
        weight, denom = None, num_pos
        if self.cfg.centerness_weighted:
            weight, denom = ctr_targets, ctr_targets.sum().detach().clamp(min=1e-6)
        # Boxes about the point in the same units as the distances: IoU and GIoU are unchanged
        # by scaling both boxes about one point, so stride units give the pixel-space loss.
        loss_bbox = self.loss_bbox(
            self.coder.decode(pos_points, distances[positive]),
            self.coder.decode(pos_points, pos_targets),
            weight,
            avg_factor=denom,
        )
        loss_centerness = self.loss_centerness(
            centerness[positive], ctr_targets, avg_factor=num_pos
        )
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    def predict(self, feats: Sequence[Tensor], img_shapes: Tensor) -> Detections:
        """Detections in the resized-image frame; ``img_shapes`` (Tensor[B, 2]) unpadded (h, w)."""
        outputs = self(feats)
        points, _ = self._points(outputs.cls_scores)
        preds = outputs.bbox_preds
        if self.cfg.norm_on_bbox:  # stride units -> pixels
            preds = [p * s for p, s in zip(preds, self.cfg.prior_generator.strides)]

        def decode(priors: Tensor, pred: Tensor, shapes: Tensor) -> Tensor:
            return self.coder.decode(priors, pred, max_shape=shapes)

        return predict_with_centerness(
            self.cfg.test_cfg,
            points,
            outputs.cls_scores,
            preds,
            outputs.centernesses,
            decode,
            img_shapes.to(points[0].device),
        )


@register(FCOSHeadConfig)
def build_fcos_head(
    cfg: FCOSHeadConfig, *, in_channels: int, num_classes: int, **context
) -> FCOSHead:
    """Build an :class:`FCOSHead` for the neck's ``in_channels`` and the detector's classes."""
    del context
    return FCOSHead(cfg, in_channels, num_classes)
