"""torchvision's FasterRCNN weights under detfn's names, and a torchvision twin of a detfn config.

With the same weights and the settings where the two libraries differ by default made equal
(RoIAlign without the half-pixel shift, as torchvision has no ``aligned``; anchor ratios whose
corners are whole pixels, since torchvision rounds its base anchors and mmdetection does not;
no normalization or resize inside torchvision's transform), both models compute the same
proposals, samples, losses and detections. The equivalence test and the benchmark both use this
one mapping.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

__all__ = [
    "INTEGER_CORNER_RATIOS",
    "fcos_head_to_detfn",
    "fcos_to_detfn",
    "load_torchvision_weights",
    "retinanet_to_detfn",
    "torchvision_faster_rcnn",
    "torchvision_fcos",
    "torchvision_retinanet",
    "torchvision_to_detfn",
]

# ratio h/w 1/4, 1, 4: base anchors (2s x s/2, s x s, s/2 x 2s) have whole-pixel corners for any
# even size s, so torchvision's rounding changes nothing
INTEGER_CORNER_RATIOS = (0.25, 1.0, 4.0)

_RENAMES = (
    (r"backbone\.body\.", "backbone."),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"neck.lateral_convs.\1."),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"neck.fpn_convs.\1."),
    (r"rpn\.head\.conv\.0\.0\.", "rpn_head.rpn_conv."),
    (r"rpn\.head\.cls_logits\.", "rpn_head.rpn_cls."),
    (r"rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg."),
    (r"roi_heads\.box_head\.fc6\.", "roi_head.bbox_head.shared_fcs.0."),
    (r"roi_heads\.box_head\.fc7\.", "roi_head.bbox_head.shared_fcs.1."),
    (r"roi_heads\.box_predictor\.cls_score\.", "roi_head.bbox_head.fc_cls."),
    (r"roi_heads\.box_predictor\.bbox_pred\.", "roi_head.bbox_head.fc_reg."),
)


_RETINANET_RENAMES = (
    *_RENAMES[:3],
    (r"backbone\.fpn\.extra_blocks\.p6\.", "neck.fpn_convs.3."),
    (r"backbone\.fpn\.extra_blocks\.p7\.", "neck.fpn_convs.4."),
    (r"head\.classification_head\.conv\.(\d)\.0\.", r"bbox_head.cls_convs.\1.conv."),
    (r"head\.classification_head\.conv\.(\d)\.1\.", r"bbox_head.cls_convs.\1.gn."),
    (r"head\.classification_head\.cls_logits\.", "bbox_head.retina_cls."),
    (r"head\.regression_head\.conv\.(\d)\.0\.", r"bbox_head.reg_convs.\1.conv."),
    (r"head\.regression_head\.conv\.(\d)\.1\.", r"bbox_head.reg_convs.\1.gn."),
    (r"head\.regression_head\.bbox_reg\.", "bbox_head.retina_reg."),
)


def _renamed(state: dict[str, Tensor], renames, caller: str) -> dict[str, Tensor]:
    """``state`` under the first matching ``(pattern, replacement)`` of ``renames`` per key."""
    out = {}
    for key, value in state.items():
        match = next(((p, r) for p, r in renames if re.match(p, key)), None)
        if match is None:
            raise KeyError(f"{caller}: no detfn name for torchvision weight {key!r}")
        out[re.sub(match[0], match[1], key, count=1)] = value
    return out


def torchvision_to_detfn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's FasterRCNN weights to detfn's; move the background class from the
    first classifier row to the last and drop its box regressor rows."""
    out = _renamed(state, _RENAMES, "torchvision_to_detfn")
    for key, value in out.items():
        if key.startswith("roi_head.bbox_head.fc_cls."):
            out[key] = torch.cat([value[1:], value[:1]])
        elif key.startswith("roi_head.bbox_head.fc_reg."):
            out[key] = value[4:]
    return out


def retinanet_to_detfn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's RetinaNet weights (ResNet, FPN with P6/P7, head towers) to detfn's.
    Both libraries have sigmoid classifiers without a background row: names change, values not."""
    return _renamed(state, _RETINANET_RENAMES, "retinanet_to_detfn")


def fcos_head_to_detfn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's FCOS head weights (``FCOS.head``) to detfn's FCOSHead names."""
    out = {}
    towers = {"classification_head.conv": "cls_convs", "regression_head.conv": "reg_convs"}
    single = {
        "classification_head.cls_logits": "conv_cls",
        "regression_head.bbox_reg": "conv_reg",
        "regression_head.bbox_ctrness": "conv_centerness",
    }
    for name, value in state.items():
        prefix, leaf = name.rsplit(".", 1)
        if prefix in single:
            out[f"{single[prefix]}.{leaf}"] = value
            continue
        tower, index = prefix.rsplit(".", 1)
        block, part = divmod(int(index), 3)  # Sequential(conv, GroupNorm, ReLU) per block
        out[f"{towers[tower]}.{block}.{('conv', 'gn')[part]}.{leaf}"] = value
    return out


def fcos_to_detfn(
    state: dict[str, Tensor], num_levels: int = 5, scale: float = 1.0
) -> dict[str, Tensor]:
    """Rename torchvision's whole FCOS (ResNet, FPN with P6/P7, head) to detfn's names. detfn's
    per-level ``Scale`` has no torchvision twin: it gets ``scale``, 1.0 (multiplies by one) for
    torchvision's own FCOS, or the twin's distance unit in strides
    (:func:`experiments.torchvision_models.twin_distance_scale`)."""
    head = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
    rest = {k: v for k, v in state.items() if not k.startswith("head.")}
    out = _renamed(rest, _RETINANET_RENAMES[:5], "fcos_to_detfn")
    out.update({f"bbox_head.{k}": v for k, v in fcos_head_to_detfn(head).items()})
    out.update({f"bbox_head.scales.{i}.scale": torch.tensor(scale) for i in range(num_levels)})
    return out


def load_torchvision_weights(model: nn.Module, reference: nn.Module, mapping=None) -> None:
    """Copy ``reference``'s torchvision weights into detfn's ``model`` through ``mapping`` (a
    renaming function, default :func:`torchvision_to_detfn` for FasterRCNN); every tensor of
    both must be mapped (a ``ValueError`` names the ones that are not)."""
    mapped = (mapping or torchvision_to_detfn)(reference.state_dict())
    ours = model.state_dict()
    # BatchNorm's step counter exists only on one side when the other uses FrozenBatchNorm
    mapped = {k: v for k, v in mapped.items() if k in ours or not k.endswith("num_batches_tracked")}
    unmapped = {k for k in set(ours) ^ set(mapped) if not k.endswith("num_batches_tracked")}
    if unmapped:
        raise ValueError(f"load_torchvision_weights: unmapped weights {sorted(unmapped)}")
    model.load_state_dict(mapped, strict=False)


def torchvision_faster_rcnn(
    depth: int,
    num_classes: int,
    image_size: tuple[int, int],
    *,
    out_channels: int = 256,
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
    ratios: tuple[float, ...] = INTEGER_CORNER_RATIOS,
    proposals: tuple[int, int, int, int] = (2000, 1000, 1000, 1000),
    rois_per_image: int = 512,
    sampling_ratio: int = 0,
) -> nn.Module:
    """torchvision's FasterRCNN shaped as mmdetection's ``faster_rcnn_r{depth}_fpn_1x``.

    FrozenBatchNorm ResNet with layer2-4 trainable (mmdet ``frozen_stages=1``, ``norm_eval``),
    FPN with max-pooled P6, ``proposals`` = (train pre-NMS per level, train kept, test pre-NMS
    per level, test kept), RoIAlign 7x7 with ``sampling_ratio``. The images are fed already
    normalized and at ``image_size`` (H, W): the transform neither normalizes nor resizes.
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import MultiScaleRoIAlign

    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=3)
    if out_channels != backbone.out_channels:
        raise ValueError(f"torchvision_faster_rcnn: the FPN has {backbone.out_channels} channels")
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (ratios,) * len(anchor_sizes))
    pre_train, post_train, pre_test, post_test = proposals
    return FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=min(image_size),
        max_size=max(image_size),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=pre_train,
        rpn_post_nms_top_n_train=post_train,
        rpn_pre_nms_top_n_test=pre_test,
        rpn_post_nms_top_n_test=post_test,
        box_batch_size_per_image=rois_per_image,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio),
    )


def torchvision_retinanet(
    depth: int,
    num_classes: int,
    image_size: tuple[int, int],
    cell_anchors: list[Tensor],
    *,
    frozen_bn: bool = True,
    detections_per_img: int = 100,
) -> nn.Module:
    """torchvision's RetinaNet shaped as mmdetection's ``retinanet_r{depth}_fpn_1x``.

    ResNet-``depth`` with C3-C5 into the FPN, P6 from P5 and a ReLU before P7 (torchvision's
    ``LastLevelP6P7(256, 256)``, mmdetection's ``on_output`` + ``relu_before_extra_convs``);
    ``frozen_bn``: FrozenBatchNorm with the stem and layer1 frozen (mmdetection's 1x training),
    else trainable BatchNorm everywhere. ``cell_anchors`` (per level Tensor[A, 4], detfn's
    unrounded octave anchors) replace torchvision's rounded ones. The images are fed already
    normalized and at ``image_size`` (H, W): the transform neither normalizes nor resizes.
    """
    from torchvision.models.detection import RetinaNet

    model = RetinaNet(
        _dense_backbone(depth, frozen_bn),
        num_classes=num_classes,
        detections_per_img=detections_per_img,
        **_fed_as_is(image_size),
    )
    model.anchor_generator.cell_anchors = list(cell_anchors)
    return model


def torchvision_fcos(
    depth: int, num_classes: int, image_size: tuple[int, int], *, frozen_bn: bool = True
) -> nn.Module:
    """torchvision's FCOS (``fcos_resnet50_fpn``'s assembly) on a ResNet-``depth``: the
    backbone and FPN of :func:`torchvision_retinanet`, torchvision's FCOS head and defaults
    (score 0.2, NMS 0.6, 1000 per level, 100 per image, centre sampling radius 1.5), images fed
    already normalized and at ``image_size`` (H, W)."""
    from torchvision.models.detection import FCOS

    return FCOS(
        _dense_backbone(depth, frozen_bn),
        num_classes=num_classes,
        **_fed_as_is(image_size),
    )


def _fed_as_is(image_size: tuple[int, int]) -> dict:
    """torchvision transform settings that neither normalize nor resize ``image_size`` images."""
    return {
        "min_size": min(image_size),
        "max_size": max(image_size),
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
    }


def _dense_backbone(depth: int, frozen_bn: bool) -> nn.Module:
    """ResNet + FPN of torchvision's dense detectors: C3-C5, P6 from P5, ReLU before P7."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    norm = {} if frozen_bn else {"norm_layer": nn.BatchNorm2d}
    return resnet_fpn_backbone(
        backbone_name=f"resnet{depth}",
        weights=None,
        trainable_layers=3 if frozen_bn else 5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
        **norm,
    )
