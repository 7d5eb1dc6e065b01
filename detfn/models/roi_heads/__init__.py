"""Second-stage (RoI) heads: RoI feature extraction, the box head and the stage that joins them.

Importing this package registers their configs.
"""

from detfn.models.roi_heads.bbox_head import Shared2FCBBoxHead, Shared2FCBBoxHeadConfig, accuracy
from detfn.models.roi_heads.cascade import (
    CascadeRoIHead,
    CascadeRoIHeadConfig,
    cascade_stage,
    pad_rois,
    refine_rois,
)
from detfn.models.roi_heads.mask_branch import MaskBranch, MaskBranchConfig, masks_for_detections
from detfn.models.roi_heads.mask_head import (
    FCNMaskHead,
    FCNMaskHeadConfig,
    mask_loss,
    mask_roi_extractor_config,
)
from detfn.models.roi_heads.mask_paste import paste_masks, paste_masks_per_image
from detfn.models.roi_heads.mask_targets import mask_targets
from detfn.models.roi_heads.roi_extractor import (
    SingleRoIExtractor,
    SingleRoIExtractorConfig,
    map_roi_levels,
)
from detfn.models.roi_heads.standard import (
    RoISamples,
    StandardRoIHead,
    StandardRoIHeadConfig,
    rois_from_mask,
    sample_rois,
)

__all__ = [
    "CascadeRoIHead",
    "CascadeRoIHeadConfig",
    "cascade_stage",
    "pad_rois",
    "refine_rois",
    "FCNMaskHead",
    "FCNMaskHeadConfig",
    "MaskBranch",
    "MaskBranchConfig",
    "RoISamples",
    "Shared2FCBBoxHead",
    "Shared2FCBBoxHeadConfig",
    "SingleRoIExtractor",
    "SingleRoIExtractorConfig",
    "StandardRoIHead",
    "StandardRoIHeadConfig",
    "accuracy",
    "map_roi_levels",
    "mask_loss",
    "mask_roi_extractor_config",
    "mask_targets",
    "masks_for_detections",
    "paste_masks",
    "paste_masks_per_image",
    "rois_from_mask",
    "sample_rois",
]
