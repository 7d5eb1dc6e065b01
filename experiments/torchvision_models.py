"""torchvision twins of the ``bccd`` presets, for :mod:`experiments.compare_torchvision`.

Each builder returns a torchvision detector sized as a detfn preset: ResNet-18 from scratch with
trainable BatchNorm, a 128-channel FPN and the preset's head, with torchvision's own
initialization (the presets draw the same rules). The images come from detfn's loader already
resized and normalized, so torchvision's transform neither resizes nor normalizes them.

:func:`torchvision_fcos_bccd` reads the FCOS preset's config; :data:`FCOS_DIFFERENCES` holds the
detfn settings under which detfn's FCOS computes what that twin computes, i.e. the points where
torchvision's FCOS necessarily differs from the preset (the module docstring of
:mod:`experiments.compare_torchvision` explains each one); ``tests/experiments/
test_compare_torchvision.py`` checks with equal weights that they are the only ones.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torchvision.models
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detfn.apis import ExperimentConfig
from detfn.data import ResizeConfig
from detfn.models.losses import GIoULossConfig

__all__ = [
    "FCOS_DIFFERENCES",
    "NominalStridePoints",
    "TWO_STAGE_SETTINGS",
    "fed_as_is",
    "preset_image_size",
    "torchvision_fcos_bccd",
    "torchvision_model",
    "torchvision_retinanet_bccd",
    "twin_box_sides",
    "twin_distance_scale",
]

# detfn FCOS settings that compute what torchvision's FCOS computes, where torchvision has no
# option for the preset's choice (see experiments.compare_torchvision).
FCOS_DIFFERENCES = {
    # ReLU distances in units of the level's stride, no per-level learnable Scale (detfn's stay 1)
    "bbox_head.norm_on_bbox": True,
    "bbox_head.centerness_on_reg": True,
    # GIoU (eps 1e-7) averaged over the positives, not IoU (-log) weighted by centerness targets
    "bbox_head.loss_bbox": GIoULossConfig(eps=1e-7),
    "bbox_head.centerness_weighted": False,
    # threshold, per-level top-k and reported score on sqrt(cls * centerness), not cls alone
    "bbox_head.test_cfg.score_mode": "geometric_mean",
    # torchvision's range bounds are strict, detfn's (mmdetection's) inclusive: the preset's
    # bounds moved 1e-3 px inwards, exact while box sides and points lie on a 0.5 px grid (BCCD
    # at 1/2 size)
    "bbox_head.regress_ranges": (
        (-1.0, 32.0 - 1e-3),
        (32.0 + 1e-3, 64.0 - 1e-3),
        (64.0 + 1e-3, 128.0 - 1e-3),
        (128.0 + 1e-3, 256.0 - 1e-3),
        (256.0 + 1e-3, 1e8),
    ),
}


# RPN proposals and sampled RoIs of the two-stage bccd (and nuclei) presets
TWO_STAGE_SETTINGS = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 300,
    "box_batch_size_per_image": 256,
}


def fed_as_is(height: int, width: int) -> dict:
    """torchvision transform settings that keep ``height`` x ``width`` normalized images."""
    return {
        "min_size": min(height, width),
        "max_size": max(height, width),
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
    }


def _resnet_fpn(
    depth: int,
    levels: tuple[int, ...],
    in_channels: tuple[int, ...],
    out_channels: int,
    p6_in_channels: int | None = None,
) -> nn.Module:
    """torchvision's ResNet-``depth`` from scratch with trainable BatchNorm, layers ``levels``
    (1: layer1, C2) into an FPN of ``out_channels``; ``p6_in_channels``: add P6 and P7
    (``LastLevelP6P7``: P6 from P5 when it equals ``out_channels``, else from the last C)."""
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=nn.BatchNorm2d)
    layers = {f"layer{level}": str(i) for i, level in enumerate(levels)}
    extra = None if p6_in_channels is None else LastLevelP6P7(p6_in_channels, out_channels)
    return BackboneWithFPN(body, layers, list(in_channels), out_channels, extra_blocks=extra)


def torchvision_model(
    num_classes: int, ratios: tuple[float, ...] = (0.5, 1.0, 2.0), *, image_size: tuple[int, int]
) -> nn.Module:
    """torchvision's FasterRCNN sized as the ``bccd`` preset; ``ratios`` are the anchor ratios,
    ``image_size`` the (height, width) its transform keeps (:func:`preset_image_size`)."""
    backbone = _resnet_fpn(18, (1, 2, 3, 4), (64, 128, 256, 512), 128)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), (ratios,) * 5)
    return FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        **fed_as_is(*image_size),
        rpn_anchor_generator=anchors,
        **TWO_STAGE_SETTINGS,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
    )


def torchvision_retinanet_bccd(
    num_classes: int, head_norm: str = "none", *, image_size: tuple[int, int]
) -> nn.Module:
    """torchvision's RetinaNet sized as the ``retinanet_bccd_preset``; ``head_norm="GN"`` gives
    its towers GroupNorm(32) after bias-free convs, as the preset's ``bbox_head.norm``;
    ``image_size`` is the (height, width) its transform keeps (:func:`preset_image_size`)."""
    # in != out channels: P6 from C5, as the preset's on_input
    backbone = _resnet_fpn(18, (2, 3, 4), (128, 256, 512), 128, p6_in_channels=512)
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    norm_layer = {"none": None, "GN": partial(nn.GroupNorm, 32)}[head_norm]
    head = RetinaNetHead(128, 9, num_classes, norm_layer=norm_layer)
    return RetinaNet(
        backbone,
        num_classes,
        **fed_as_is(*image_size),
        anchor_generator=anchors,
        head=head,
        detections_per_img=100,
    )


class NominalStridePoints(AnchorGenerator):
    """FCOS's points as torchvision encodes them (one box of side ``a`` per location: its regress
    range is ``(4 a, 8 a)``, its centre-sampling radius and distances are in units of ``a``),
    placed as detfn's ``PointGenerator`` places them: centred at ``((x + offset) * s,
    (y + offset) * s)`` with each level's nominal stride ``s``. ``sides`` are the ``a`` (default
    the strides, torchvision's own choice). torchvision's own generator centres them at
    ``(x * s', y * s')`` with ``s' = padded image side // grid side`` (for a 320-wide image,
    P7's 320 // 3 = 106 instead of 128)."""

    def __init__(
        self, strides: tuple[int, ...], offset: float, sides: tuple[float, ...] | None = None
    ):
        sides = tuple(float(s) for s in strides) if sides is None else tuple(sides)
        super().__init__(tuple((a,) for a in sides), ((1.0,),) * len(strides))
        self.strides = tuple(strides)
        self.cell_anchors = [
            torch.tensor([[-a / 2, -a / 2, a / 2, a / 2]]) + offset * s
            for s, a in zip(strides, sides)
        ]

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        """Per image Tensor[N, 4]: the boxes of all levels, the same for every image."""
        device = feature_maps[0].device
        self.set_cell_anchors(feature_maps[0].dtype, device)
        sizes = [list(f.shape[-2:]) for f in feature_maps]
        strides = [[torch.tensor(s, device=device)] * 2 for s in self.strides]
        points = torch.cat(self.grid_anchors(sizes, strides))
        return [points] * len(image_list.image_sizes)


def preset_image_size(cfg: ExperimentConfig) -> tuple[int, int]:
    """(height, width) the preset's train pipeline resizes to (its first ``ResizeConfig`` scale,
    given as (long side, short side) for landscape images)."""
    resize = next(t for t in cfg.data.train.pipeline if isinstance(t, ResizeConfig))
    long_side, short_side = max(resize.scale[0]), min(resize.scale[0])
    return short_side, long_side


def _require(ok: bool, field: str, why: str) -> None:
    if not ok:
        raise ValueError(f"torchvision_fcos_bccd: model.{field}: {why}")


def _check_expressible(model) -> None:
    """One line naming the first field of ``model`` (an FCOS single-stage config) that
    torchvision's FCOS cannot express beyond :data:`FCOS_DIFFERENCES`."""
    backbone, neck, head = model.backbone, model.neck, model.bbox_head
    torchvision_like = (
        backbone.style == "pytorch"
        and backbone.norm == "BN"
        and not backbone.norm_eval
        and backbone.frozen_stages == -1
        and not backbone.zero_init_residual
    )
    why = "the twin is pytorch style, trainable BN, nothing frozen, no zero-init residual"
    _require(torchvision_like, "backbone", why)
    extra = neck.add_extra_convs == "on_output" and neck.relu_before_extra_convs
    _require(extra, "neck.add_extra_convs", "torchvision: P6 from P5 and a ReLU before P7")
    levels = len(neck.in_channels) - neck.start_level
    _require(neck.num_outs == levels + 2, "neck.num_outs", "torchvision adds exactly P6 and P7")
    _require(head.feat_channels == neck.out_channels, "bbox_head.feat_channels", "= neck width")
    _require(head.norm == "GN", "bbox_head.norm", "torchvision's towers use GroupNorm(32)")
    _require(head.test_cfg.nms_pre > 0, "bbox_head.test_cfg.nms_pre", "torchvision keeps top-k")
    # torchvision's ranges are (4 a, 8 a) of its box side a per level, open below on the first
    # and above on the last; one centre radius for all levels needs one ratio a / s
    sides, ranges = twin_box_sides(head), head.regress_ranges
    lower_ok = all(r[0] == 4 * a for r, a in zip(ranges[1:], sides[1:]))
    upper_ok = all(r[1] == 8 * a for r, a in zip(ranges[:-1], sides[:-1]))
    ratios = {a / s for a, s in zip(sides, head.prior_generator.strides)}
    why = "torchvision's are (4 a, 8 a) with a = k * stride, open below first and above last"
    _require(lower_ok and upper_ok and len(ratios) == 1, "bbox_head.regress_ranges", why)


def twin_box_sides(head) -> tuple[float, ...]:
    """The box side ``a`` per level for which torchvision's ranges ``(4 a, 8 a)`` are the FCOS
    head config's ``regress_ranges``: upper bound / 8 (lower / 4 on the open-ended last level)."""
    ranges = head.regress_ranges
    return tuple(r[1] / 8 for r in ranges[:-1]) + (ranges[-1][0] / 4,)


def twin_distance_scale(model) -> float:
    """``a / s``: the twin's distance unit in strides. With equal weights, detfn's per-level
    ``Scale`` at this value computes the twin's distances (detfn's are in strides)."""
    head = model.bbox_head
    return twin_box_sides(head)[0] / head.prior_generator.strides[0]


def torchvision_fcos_bccd(cfg: ExperimentConfig) -> nn.Module:
    """torchvision's FCOS built as ``cfg.model`` (the ``fcos_bccd_preset``'s) wherever
    torchvision allows: backbone depth, FPN levels and width with P6 from P5 and a ReLU before P7,
    ``stacked_convs`` GN towers (their conv biases held at zero and frozen when the preset has
    none), points at the preset's strides and offset with the box sides of its regress ranges
    (:func:`twin_box_sides`), center sampling (the preset's radius, or an infinite one when it
    has none) and the preset's score
    threshold, per-level top-k, NMS IoU and detections per image."""
    model = cfg.model
    _check_expressible(model)
    neck, head, test = model.neck, model.bbox_head, model.bbox_head.test_cfg
    used = tuple(range(neck.start_level + 1, len(neck.in_channels) + 1))  # layer indices
    backbone = _resnet_fpn(  # P6 from P5: its input has the FPN's width
        model.backbone.depth,
        used,
        neck.in_channels[neck.start_level :],
        neck.out_channels,
        p6_in_channels=neck.out_channels,
    )
    tv_head = FCOSHead(neck.out_channels, 1, model.num_classes, num_convs=head.stacked_convs)
    if not head.conv_bias:  # mmdetection's "auto" (None): no bias before a norm
        for tower in (tv_head.classification_head.conv, tv_head.regression_head.conv):
            for conv in (m for m in tower if isinstance(m, nn.Conv2d)):
                nn.init.zeros_(conv.bias)
                conv.bias.requires_grad_(False)
    strides, sides = head.prior_generator.strides, twin_box_sides(head)
    points = NominalStridePoints(strides, head.prior_generator.offset, sides)
    # torchvision's radius is in box sides, the preset's in strides
    radius = head.center_sample_radius * strides[0] / sides[0]
    return FCOS(
        backbone,
        model.num_classes,
        **fed_as_is(*preset_image_size(cfg)),
        anchor_generator=points,
        head=tv_head,
        center_sampling_radius=radius if head.center_sampling else math.inf,
        score_thresh=test.score_thr,
        nms_thresh=test.iou_threshold,
        detections_per_img=test.max_per_img,
        topk_candidates=test.nms_pre,
    )
