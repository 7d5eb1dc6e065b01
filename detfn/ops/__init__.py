"""Tensor operators detfn needs beyond torchvision's, kept apart from the model maths."""

from detfn.ops.roi_align import RoIAlignBackwardFunction, RoIAlignFunction, roi_align

__all__ = ["RoIAlignBackwardFunction", "RoIAlignFunction", "roi_align"]
