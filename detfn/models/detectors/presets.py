"""Named detectors: values of the assemblies, as mmdetection's model ``_base_`` files.

* :data:`FASTER_RCNN_R50_FPN`: ``faster_rcnn_r50_fpn`` (section 2.1 of mmdet-facts), the
  two-stage assembly with its defaults;
* :data:`RETINANET_R50_FPN`: ``retinanet_r50_fpn`` (section 2.2), the single-stage assembly
  with its defaults;
* :data:`FCOS_R50_CAFFE_FPN_GN_HEAD`: ``fcos_r50_caffe_fpn_gn-head`` (section 2.3): caffe-style
  ResNet-50 with frozen BatchNorm, P3-P7 with P6 from P5 and a ReLU before P7, the FCOS head;
* :data:`ATSS_R50_FPN`: ``atss_r50_fpn`` (section 2.4): P6 from P5 without ReLU, the ATSS head;
* :data:`MASK_RCNN_R50_FPN`: ``mask_rcnn_r50_fpn`` (section 2.5): Faster R-CNN whose RoI head
  has a mask branch and an R-CNN assigner with low-quality matches;
* :data:`CASCADE_RCNN_R50_FPN` and :data:`CASCADE_MASK_RCNN_R50_FPN`: ``cascade_rcnn_r50_fpn``
  and ``cascade_mask_rcnn_r50_fpn`` (section 2.6): a three-stage cascade RoI head and the
  cascade's RPN settings (Smooth L1 with beta 1/9, no anchors across the border, 2000 training
  proposals).

Variants are ``detfn.config.override(FASTER_RCNN_R50_FPN, "backbone.depth", 101)``.
"""

from __future__ import annotations

from detfn.config import override
from detfn.models.backbones import ResNetConfig
from detfn.models.dense_heads.atss_head import ATSSHeadConfig
from detfn.models.dense_heads.fcos_head import FCOSHeadConfig
from detfn.models.detectors.single_stage import SingleStageDetectorConfig
from detfn.models.detectors.two_stage import TwoStageDetectorConfig
from detfn.models.losses import SmoothL1LossConfig
from detfn.models.necks import FPNConfig
from detfn.models.roi_heads.cascade import (
    CASCADE_IOUS,
    CASCADE_TARGET_STDS,
    CascadeRoIHeadConfig,
    cascade_stage,
)
from detfn.models.roi_heads.mask_branch import MaskBranchConfig

__all__ = [
    "ATSS_R50_FPN",
    "CASCADE_MASK_RCNN_R50_FPN",
    "CASCADE_RCNN_R50_FPN",
    "DetectorConfigs",
    "FASTER_RCNN_R50_FPN",
    "FCOS_R50_CAFFE_FPN_GN_HEAD",
    "MASK_RCNN_R50_FPN",
    "RETINANET_R50_FPN",
]

FASTER_RCNN_R50_FPN = TwoStageDetectorConfig()
RETINANET_R50_FPN = SingleStageDetectorConfig()
FCOS_R50_CAFFE_FPN_GN_HEAD = SingleStageDetectorConfig(
    # mmdetection's BN requires_grad=False + norm_eval=True: affine and statistics frozen
    backbone=ResNetConfig(style="caffe", norm="FrozenBN"),
    neck=FPNConfig(
        start_level=1, add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True
    ),
    bbox_head=FCOSHeadConfig(),
)
ATSS_R50_FPN = SingleStageDetectorConfig(
    neck=FPNConfig(start_level=1, add_extra_convs="on_output", num_outs=5),
    bbox_head=ATSSHeadConfig(),
)

MASK_RCNN_R50_FPN = override(
    FASTER_RCNN_R50_FPN,
    {"roi_head.mask_branch": MaskBranchConfig(), "roi_head.assigner.match_low_quality": True},
)


def cascade_rcnn_r50_fpn(mask: bool = False) -> TwoStageDetectorConfig:
    """``cascade_rcnn_r50_fpn`` (``mask``: ``cascade_mask_rcnn_r50_fpn``)."""
    stages = tuple(
        cascade_stage(iou, stds, mask) for iou, stds in zip(CASCADE_IOUS, CASCADE_TARGET_STDS)
    )
    return override(
        FASTER_RCNN_R50_FPN,
        {
            "rpn_head.loss_bbox": SmoothL1LossConfig(beta=1 / 9),
            "rpn_head.allowed_border": 0.0,
            "rpn_head.train_proposal.max_per_img": 2000,
            "roi_head": CascadeRoIHeadConfig(stages=stages),
        },
    )


CASCADE_RCNN_R50_FPN = cascade_rcnn_r50_fpn()
CASCADE_MASK_RCNN_R50_FPN = cascade_rcnn_r50_fpn(mask=True)

# Every detector config type, for a field that takes any detector (``ExperimentConfig.model``).
DetectorConfigs = TwoStageDetectorConfig | SingleStageDetectorConfig
