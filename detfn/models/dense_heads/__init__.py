"""Dense (per-location) heads. Importing this package registers their configs."""

from detfn.models.dense_heads import rpn
from detfn.models.dense_heads.rpn import ProposalConfig, Proposals, RPNHead, RPNHeadConfig

__all__ = ["ProposalConfig", "Proposals", "RPNHead", "RPNHeadConfig", "rpn"]
