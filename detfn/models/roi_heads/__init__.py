"""Second-stage (RoI) heads: RoI feature extraction, the box head and the stage that joins them.

Importing this package registers their configs.
"""

from detfn.models.roi_heads.bbox_head import Shared2FCBBoxHead, Shared2FCBBoxHeadConfig, accuracy
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
    "RoISamples",
    "Shared2FCBBoxHead",
    "Shared2FCBBoxHeadConfig",
    "SingleRoIExtractor",
    "SingleRoIExtractorConfig",
    "StandardRoIHead",
    "StandardRoIHeadConfig",
    "accuracy",
    "map_roi_levels",
    "rois_from_mask",
    "sample_rois",
]
