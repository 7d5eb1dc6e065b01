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
    "load_torchvision_weights",
    "torchvision_faster_rcnn",
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


def torchvision_to_detfn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's FasterRCNN weights to detfn's; move the background class from the
    first classifier row to the last and drop its box regressor rows."""
    out = {}
    for key, value in state.items():
        match = next(((p, r) for p, r in _RENAMES if re.match(p, key)), None)
        if match is None:
            raise KeyError(f"torchvision_to_detfn: no detfn name for torchvision weight {key!r}")
        name = re.sub(match[0], match[1], key, count=1)
        if "cls_score" in key:
            value = torch.cat([value[1:], value[:1]])
        elif "box_predictor.bbox_pred" in key:
            value = value[4:]
        out[name] = value
    return out


def load_torchvision_weights(model: nn.Module, reference: nn.Module) -> None:
    """Copy ``reference``'s (torchvision FasterRCNN) weights into detfn's ``model``; every
    tensor of both must be mapped (a ``ValueError`` names the ones that are not)."""
    mapped = torchvision_to_detfn(reference.state_dict())
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
