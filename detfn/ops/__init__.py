"""Tensor operators detfn needs beyond torchvision's, kept apart from the model maths."""

from detfn.ops.backends import reference_kernels
from detfn.ops.conv_affine import conv2d_affine
from detfn.ops.roi_align import (
    RoIAlignBackwardFunction,
    RoIAlignFunction,
    auto_backend,
    multi_level_roi_align,
    roi_align,
    uses_sparse,
)
from detfn.ops.winograd import Conv3x3, conv3x3, conv_backend, uses_winograd, winograd_conv3x3

__all__ = [
    "Conv3x3",
    "RoIAlignBackwardFunction",
    "RoIAlignFunction",
    "auto_backend",
    "conv2d_affine",
    "conv3x3",
    "conv_backend",
    "multi_level_roi_align",
    "reference_kernels",
    "roi_align",
    "uses_sparse",
    "uses_winograd",
    "winograd_conv3x3",
]
