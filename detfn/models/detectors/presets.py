"""Named detectors: values of the assemblies, as mmdetection's model ``_base_`` files.

* :data:`FASTER_RCNN_R50_FPN`: ``faster_rcnn_r50_fpn`` (section 2.1 of mmdet-facts), the
  two-stage assembly with its defaults;
* :data:`RETINANET_R50_FPN`: ``retinanet_r50_fpn`` (section 2.2), the single-stage assembly
  with its defaults;
* :data:`FCOS_R50_CAFFE_FPN_GN_HEAD`: ``fcos_r50_caffe_fpn_gn-head`` (section 2.3): caffe-style
  ResNet-50 with frozen BatchNorm, P3-P7 with P6 from P5 and a ReLU before P7, the FCOS head;
* :data:`ATSS_R50_FPN`: ``atss_r50_fpn`` (section 2.4): P6 from P5 without ReLU, the ATSS head.

Variants are ``detfn.config.override(FASTER_RCNN_R50_FPN, "backbone.depth", 101)``.
"""

from __future__ import annotations

from detfn.models.backbones import ResNetConfig
from detfn.models.dense_heads.atss_head import ATSSHeadConfig
from detfn.models.dense_heads.fcos_head import FCOSHeadConfig
from detfn.models.detectors.single_stage import SingleStageDetectorConfig
from detfn.models.detectors.two_stage import TwoStageDetectorConfig
from detfn.models.necks import FPNConfig

__all__ = [
    "ATSS_R50_FPN",
    "DetectorConfigs",
    "FASTER_RCNN_R50_FPN",
    "FCOS_R50_CAFFE_FPN_GN_HEAD",
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

# Every detector config type, for a field that takes any detector (``ExperimentConfig.model``).
DetectorConfigs = TwoStageDetectorConfig | SingleStageDetectorConfig
