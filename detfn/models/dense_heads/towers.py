"""Building blocks shared by the FCOS and ATSS heads: conv towers, per-level scales, init.

Both heads run two towers of ``stacked_convs`` 3x3 convs over every FPN level, one for
classification and one for box regression, with GroupNorm(32) and ReLU after each conv (the
norm is an option). Parameter names follow mmdetection's ``ConvModule`` (``cls_convs.0.conv``,
``cls_convs.0.gn``) so that mmdetection checkpoints map one to one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detfn.models.backbones.norm import GN_GROUPS
from detfn.ops.winograd import Conv3x3

__all__ = [
    "ConvGNReLU",
    "HeadNorm",
    "Scale",
    "conv_tower",
    "init_head_convs_",
    "prior_bias",
]

HeadNorm = Literal["GN", "none"]


class ConvGNReLU(nn.Module):
    """3x3 conv, optional GroupNorm(32), ReLU (mmdetection's ``ConvModule`` with GN)."""

    def __init__(self, in_channels: int, out_channels: int, norm: HeadNorm, bias: bool):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels, bias=bias)
        if norm == "GN":
            if out_channels % GN_GROUPS:
                raise ValueError(
                    f"head norm 'GN' needs feat_channels divisible by {GN_GROUPS}, got "
                    f"{out_channels}; use a multiple of {GN_GROUPS} or norm='none'"
                )
            self.gn = nn.GroupNorm(GN_GROUPS, out_channels)
        else:
            self.gn = None

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H, W]."""
        x = self.conv(x)
        if self.gn is not None:
            x = self.gn(x)
        return F.relu(x)


def conv_tower(
    in_channels: int, feat_channels: int, depth: int, norm: HeadNorm, bias: bool | None
) -> nn.Sequential:
    """``depth`` :class:`ConvGNReLU` blocks; ``bias=None`` is "auto": a bias only without norm."""
    use_bias = norm == "none" if bias is None else bias
    return nn.Sequential(
        *(
            ConvGNReLU(in_channels if i == 0 else feat_channels, feat_channels, norm, use_bias)
            for i in range(depth)
        )
    )


class Scale(nn.Module):
    """A learnable scalar multiplying one level's regression output (mmcv's ``Scale``).

    The levels share the regression conv; the scale lets each level rescale it for its range.
    """

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def prior_bias(prior_prob: float) -> float:
    """Classifier bias whose sigmoid is ``prior_prob``, so training starts with few false
    positives (Lin et al., Focal Loss, section 3.3): ``-log((1 - p) / p)``, -4.595 for 0.01."""
    return -math.log((1 - prior_prob) / prior_prob)


def init_head_convs_(head: nn.Module, cls_conv: nn.Conv2d, prior_prob: float) -> None:
    """In place: Normal(0, 0.01) weights and zero biases on every conv, ``cls_conv``'s bias from
    the prior probability (mmdetection's dense-head ``init_cfg``). Norms keep weight 1, bias 0."""
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.constant_(cls_conv.bias, prior_bias(prior_prob))
