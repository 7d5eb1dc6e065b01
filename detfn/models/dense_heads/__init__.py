"""Dense (per-location) heads. Importing this package registers their configs."""

from detfn.models.dense_heads import anchor_head, atss_head, fcos_head, retina_head, rpn
from detfn.models.dense_heads.anchor_head import AnchorHead, AnchorHeadConfig, DenseTestConfig
from detfn.models.dense_heads.atss_head import ATSSHead, ATSSHeadConfig
from detfn.models.dense_heads.base import DenseHead, DenseHeadConfig
from detfn.models.dense_heads.fcos_head import FCOSHead, FCOSHeadConfig
from detfn.models.dense_heads.retina_head import RetinaHead, RetinaHeadConfig
from detfn.models.dense_heads.rpn import ProposalConfig, Proposals, RPNHead, RPNHeadConfig

__all__ = [
    "ATSSHead",
    "ATSSHeadConfig",
    "AnchorHead",
    "AnchorHeadConfig",
    "DenseHead",
    "DenseHeadConfig",
    "DenseTestConfig",
    "FCOSHead",
    "FCOSHeadConfig",
    "ProposalConfig",
    "Proposals",
    "RPNHead",
    "RPNHeadConfig",
    "RetinaHead",
    "RetinaHeadConfig",
    "anchor_head",
    "atss_head",
    "fcos_head",
    "retina_head",
    "rpn",
]
