"""Dense (per-location) heads. Importing this package registers their configs."""

from detfn.models.dense_heads import atss_head, fcos_head, rpn
from detfn.models.dense_heads.atss_head import ATSSHead, ATSSHeadConfig
from detfn.models.dense_heads.fcos_head import FCOSHead, FCOSHeadConfig
from detfn.models.dense_heads.rpn import ProposalConfig, Proposals, RPNHead, RPNHeadConfig

__all__ = [
    "ATSSHead",
    "ATSSHeadConfig",
    "FCOSHead",
    "FCOSHeadConfig",
    "ProposalConfig",
    "Proposals",
    "RPNHead",
    "RPNHeadConfig",
    "atss_head",
    "fcos_head",
    "rpn",
]
