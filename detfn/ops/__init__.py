"""Tensor operators detfn needs beyond torchvision's, kept apart from the model maths."""

from detfn.ops.conv_affine import conv2d_affine
from detfn.ops.roi_align import (
    RoIAlignBackwardFunction,
    RoIAlignFunction,
    auto_backend,
    multi_level_roi_align,
    roi_align,
    uses_sparse,
)

__all__ = [
    "RoIAlignBackwardFunction",
    "RoIAlignFunction",
    "auto_backend",
    "conv2d_affine",
    "multi_level_roi_align",
    "roi_align",
    "uses_sparse",
]
