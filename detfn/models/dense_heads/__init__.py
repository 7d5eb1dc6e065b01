"""Dense (per-location) heads. Importing this package registers their configs."""

from detfn.models.dense_heads import fcos_head, rpn
from detfn.models.dense_heads.fcos_head import FCOSHead, FCOSHeadConfig
from detfn.models.dense_heads.rpn import ProposalConfig, Proposals, RPNHead, RPNHeadConfig

__all__ = [
    "FCOSHead",
    "FCOSHeadConfig",
    "ProposalConfig",
    "Proposals",
    "RPNHead",
    "RPNHeadConfig",
    "fcos_head",
    "rpn",
]
