"""Feature Pyramid Network neck (Lin et al. 2017) with mmdetection's options.

From backbone maps C_i it builds P_i = conv3x3(lateral_i + upsample(lateral_{i+1} + ...)), top
down, then adds coarser levels until there are ``num_outs``:

* no extra convs: each extra level is ``max_pool2d(previous, kernel 1, stride 2)`` (Faster R-CNN's
  P6, used only by the RPN);
* ``add_extra_convs``: a stride-2 3x3 conv whose first input is the last backbone map used
  (``"on_input"``, RetinaNet's P6 from C5), its lateral (``"on_lateral"``) or its FPN output
  (``"on_output"``); further levels convolve the previous extra level, after a ReLU when
  ``relu_before_extra_convs``.

References:
    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
    https://arxiv.org/abs/1612.03144
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from detfn.config import Config, check, check_positive
from detfn.ops.winograd import Conv3x3
from detfn.registry import register

__all__ = ["EXTRA_CONV_SOURCES", "FPN", "ExtraConvs", "FPNConfig", "build_fpn"]

ExtraConvs = Literal[False, True, "on_input", "on_lateral", "on_output"]
EXTRA_CONV_SOURCES = ("on_input", "on_lateral", "on_output")


@dataclass(frozen=True)
class FPNConfig(Config):
    """mmdet ``FPN``; defaults are Faster R-CNN's (C2-C5 in, P2-P6 out, max-pool P6).

    Attributes:
        in_channels: channels of every backbone map passed to ``forward``, finest first.
        out_channels: channels of every output level.
        num_outs: number of output levels.
        start_level: first backbone map used (1 for RetinaNet: C3).
        end_level: last backbone map used, inclusive; -1 means the last one. When it is not the
            last map, ``num_outs`` must equal the number of maps used (no extra levels).
        add_extra_convs: False (max-pool extra levels), or the source of the first extra conv;
            True means "on_input" (mmdet's convention) and is stored as "on_input".
        relu_before_extra_convs: ReLU on the input of the second and later extra convs.
        conv_init: "xavier_uniform" (mmdetection) or "lecun_uniform", bound sqrt(3 / fan_in)
            (torchvision's ``kaiming_uniform_(a=1)``). The two agree on the 3x3 convs (fan_in
            equals fan_out) and differ on the 1x1 laterals; biases start at 0 either way.
    """

    in_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    out_channels: int = 256
    num_outs: int = 5
    start_level: int = 0
    end_level: int = -1
    add_extra_convs: ExtraConvs = False
    relu_before_extra_convs: bool = False
    conv_init: Literal["xavier_uniform", "lecun_uniform"] = "xavier_uniform"

    def __post_init__(self) -> None:
        if self.add_extra_convs is True:
            object.__setattr__(self, "add_extra_convs", "on_input")
        num_ins = len(self.in_channels)
        check(
            self,
            "in_channels",
            num_ins > 0 and all(c > 0 for c in self.in_channels),
            f"must be a non-empty tuple of positive ints, got {self.in_channels}",
        )
        check_positive(self, "out_channels", "num_outs")
        check(
            self,
            "start_level",
            0 <= self.start_level < num_ins,
            f"must be in [0, {num_ins}), got {self.start_level}",
        )
        check(
            self,
            "end_level",
            self.end_level == -1 or self.start_level <= self.end_level < num_ins,
            f"must be -1 or in [start_level={self.start_level}, {num_ins}), got {self.end_level}",
        )
        check(
            self,
            "add_extra_convs",
            self.add_extra_convs is False or self.add_extra_convs in EXTRA_CONV_SOURCES,
            f"must be False, True or one of {EXTRA_CONV_SOURCES}, got {self.add_extra_convs!r}",
        )
        used = self.backbone_end_level - self.start_level
        if self.backbone_end_level == num_ins:
            check(
                self,
                "num_outs",
                self.num_outs >= used,
                f"must be >= the {used} backbone levels used, got {self.num_outs}",
            )
        else:
            check(
                self,
                "num_outs",
                self.num_outs == used,
                f"must equal the {used} levels start_level..end_level when end_level is not the "
                f"last input, got {self.num_outs}",
            )

    @property
    def backbone_end_level(self) -> int:
        """One past the last backbone map used."""
        return len(self.in_channels) if self.end_level == -1 else self.end_level + 1


class FPN(nn.Module):
    """``forward(feats)`` maps the backbone maps to ``num_outs`` maps of ``out_channels`` each.

    Attributes:
        out_channels: channels of each returned map (all equal).
    """

    def __init__(self, cfg: FPNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        used = range(cfg.start_level, cfg.backbone_end_level)
        out = cfg.out_channels
        self.lateral_convs = nn.ModuleList(nn.Conv2d(cfg.in_channels[i], out, 1) for i in used)
        self.fpn_convs = nn.ModuleList(Conv3x3(out, out) for _ in used)
        if cfg.add_extra_convs:
            for k in range(cfg.num_outs - len(used)):
                on_input = k == 0 and cfg.add_extra_convs == "on_input"
                cin = cfg.in_channels[cfg.backbone_end_level - 1] if on_input else out
                self.fpn_convs.append(nn.Conv2d(cin, out, 3, stride=2, padding=1))
        self.out_channels = (out,) * cfg.num_outs
        _init_weights(self, cfg.conv_init)

    def forward(self, feats: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, ...]:
        """Args: feats: one ``[B, in_channels[i], H_i, W_i]`` map per ``in_channels`` entry.

        Returns: ``num_outs`` maps ``[B, out_channels, H'_j, W'_j]``, finest first.
        """
        self._check_inputs(feats)
        cfg = self.cfg
        laterals = [conv(feats[cfg.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        # Top-down: upsample to the finer lateral's exact size (odd sizes do not halve evenly).
        for i in range(len(laterals) - 1, 0, -1):
            coarse = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + coarse
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        return tuple(outs + self._extra_levels(feats, laterals, outs))

    def _extra_levels(
        self, feats: tuple[Tensor, ...] | list[Tensor], laterals: list[Tensor], outs: list[Tensor]
    ) -> list[Tensor]:
        cfg, used = self.cfg, len(laterals)
        extra: list[Tensor] = []
        if not cfg.add_extra_convs:
            for _ in range(cfg.num_outs - used):
                extra.append(F.max_pool2d((extra or outs)[-1], 1, stride=2))
            return extra
        sources = {
            "on_input": feats[cfg.backbone_end_level - 1],
            "on_lateral": laterals[-1],
            "on_output": outs[-1],
        }
        for k in range(cfg.num_outs - used):
            if k == 0:
                x = sources[cfg.add_extra_convs]
            else:
                x = F.relu(extra[-1]) if cfg.relu_before_extra_convs else extra[-1]
            extra.append(self.fpn_convs[used + k](x))
        return extra

    def _check_inputs(self, feats: tuple[Tensor, ...] | list[Tensor]) -> None:
        expected = self.cfg.in_channels
        got = tuple(f.shape[1] if f.dim() == 4 else f"{f.dim()}-d" for f in feats)
        if got != expected:
            raise ValueError(
                f"FPN expects {len(expected)} maps [B, C, H, W] with channels {expected}, got {got}"
            )


def _init_weights(model: FPN, conv_init: str) -> None:
    """Conv weights by ``conv_init`` (see :class:`FPNConfig`), zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if conv_init == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, a=1)  # gain 1: U(+-sqrt(3 / fan_in))
            nn.init.zeros_(module.bias)


@register(FPNConfig)
def build_fpn(cfg: FPNConfig, **context: object) -> FPN:
    """Build the FPN from its config."""
    del context
    return FPN(cfg)
