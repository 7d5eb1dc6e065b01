"""Tensor operators detfn needs beyond torchvision's, kept apart from the model maths."""

from detfn.ops.roi_align import (
    RoIAlignBackwardFunction,
    RoIAlignFunction,
    multi_level_roi_align,
    roi_align,
    uses_sparse,
)

__all__ = [
    "RoIAlignBackwardFunction",
    "RoIAlignFunction",
    "multi_level_roi_align",
    "roi_align",
    "uses_sparse",
]
