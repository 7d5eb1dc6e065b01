"""MobileNetV2 backbone (Sandler et al. 2018) with torchvision's state-dict layout.

torchvision keeps the whole trunk in one ``features`` Sequential of 19 modules: ``features.0`` is
the stride-2 stem, ``features.1``-``features.17`` the inverted residual blocks and ``features.18``
the final 1x1 conv to 1280 channels. mmdet groups the blocks into 7 stages; detfn keeps
torchvision's names (so an ImageNet file loads by name) and mmdet's stage indices:

=====  ==================  ========  ======
index  torchvision blocks  channels  stride
=====  ==================  ========  ======
0      features.1          16        2
1      features.2-3        24        4
2      features.4-6        32        8
3      features.7-10       64        16
4      features.11-13      96        16
5      features.14-16      160       32
6      features.17         320       32
7      features.18 (1x1)   1280      32
=====  ==================  ========  ======

References:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
    https://arxiv.org/abs/1801.04381
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from torch import Tensor, nn

from detfn.config import Config, check, check_in_range, check_positive
from detfn.models.backbones.norm import freeze_, make_norm, set_batch_norm_eval_
from detfn.models.backbones.pretrained import LoadReport, load_pretrained, log_load_report
from detfn.registry import register

__all__ = ["InvertedResidual", "MobileNetV2", "MobileNetV2Config", "build_mobilenet_v2"]

# (expand ratio t, output channels c, blocks n, first stride s) per stage, from the paper's Table 2.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# GN is not offered: its 32 groups do not divide the 16- and 24-channel stages.
MobileNetNorm = Literal["BN", "FrozenBN"]
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
NUM_INDICES = len(STAGES) + 1  # 7 stages plus the final 1x1 conv


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_norm_act(cin: int, cout: int, kernel: int, stride: int, groups: int, norm: MobileNetNorm):
    """conv (no bias) -> norm -> ReLU6, named ``0``, ``1``, ``2`` like torchvision."""
    conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, make_norm(norm, cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), 3x3 depthwise, linear 1x1 project.

    An identity shortcut is added when the shape is unchanged. Submodule names follow torchvision
    (``conv.0``, ``conv.1``, ...).
    """

    def __init__(
        self, cin: int, cout: int, stride: int, expand_ratio: int, norm: MobileNetNorm
    ) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_shortcut = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_norm_act(cin, hidden, 1, 1, 1, norm))
        layers += [
            _conv_norm_act(hidden, hidden, 3, stride, hidden, norm),
            nn.Conv2d(hidden, cout, 1, bias=False),
            make_norm(norm, cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


@dataclass(frozen=True)
class MobileNetV2Config(Config):
    """mmdet ``MobileNetV2``: ``out_indices`` index the table of the module docstring.

    Attributes:
        widen_factor: channel multiplier (rounded to multiples of 8).
        out_indices: indices 0-7 of the returned maps; mmdet's default (1, 2, 4, 7) gives
            strides 4, 8, 16, 32.
        frozen_stages: -1 trains everything; 0 freezes the stem; k also freezes stages 0..k-1.
        norm: "BN" or "FrozenBN".
        norm_eval: keep every BatchNorm in eval mode during training.
        pretrained: path of a torchvision-format ImageNet state dict, or None.
    """

    widen_factor: float = 1.0
    out_indices: tuple[int, ...] = (1, 2, 4, 7)
    frozen_stages: int = -1
    norm: MobileNetNorm = "BN"
    norm_eval: bool = False
    pretrained: str | None = None

    def __post_init__(self) -> None:
        check_positive(self, "widen_factor")
        check(
            self,
            "out_indices",
            len(self.out_indices) > 0
            and list(self.out_indices) == sorted(set(self.out_indices))
            and all(0 <= i < NUM_INDICES for i in self.out_indices),
            f"must be increasing indices in [0, {NUM_INDICES}), got {self.out_indices}",
        )
        check_in_range(self, "frozen_stages", -1, len(STAGES))
        norms = get_args(MobileNetNorm)
        check(self, "norm", self.norm in norms, f"must be one of {norms}, got {self.norm!r}")


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk without classifier; ``forward(x)`` returns the ``out_indices`` maps.

    Attributes:
        out_channels: channels of each returned map.
        out_strides: stride of each returned map.
    """

    def __init__(self, cfg: MobileNetV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained_report: LoadReport | None = None  # set by build_mobilenet_v2
        stem = make_divisible(STEM_CHANNELS * cfg.widen_factor)
        layers: list[nn.Module] = [_conv_norm_act(3, stem, 3, 2, 1, cfg.norm)]
        self.stage_ends: list[int] = []  # index in ``features`` of each stage's last module
        channels, strides, cin, stride = [], [], stem, 2
        for t, c, n, s in STAGES:
            cout = make_divisible(c * cfg.widen_factor)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, cfg.norm))
                cin = cout
            stride *= s
            self.stage_ends.append(len(layers) - 1)
            channels.append(cout)
            strides.append(stride)
        last = make_divisible(LAST_CHANNELS * max(1.0, cfg.widen_factor))
        layers.append(_conv_norm_act(cin, last, 1, 1, 1, cfg.norm))
        self.stage_ends.append(len(layers) - 1)
        channels.append(last)
        strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.out_channels = tuple(channels[i] for i in cfg.out_indices)
        self.out_strides = tuple(strides[i] for i in cfg.out_indices)
        _init_weights(self)
        self._freeze_stages()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Args: x (Tensor[B, 3, H, W]). Returns one map per ``out_indices`` entry.

        Modules after the last requested index are not run (their parameters get no gradient).
        """
        wanted = {self.stage_ends[i]: i for i in self.cfg.out_indices}
        outs = []
        for index, layer in enumerate(self.features[: max(wanted) + 1]):
            x = layer(x)
            if index in wanted:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> MobileNetV2:
        """Switch mode, then re-apply ``frozen_stages`` and ``norm_eval``."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.cfg.norm_eval:
            set_batch_norm_eval_(self)
        return self

    def _freeze_stages(self) -> None:
        if self.cfg.frozen_stages < 0:
            return
        k = self.cfg.frozen_stages
        last_frozen = 0 if k == 0 else self.stage_ends[k - 1]  # 0 is the stem
        for layer in self.features[: last_frozen + 1]:
            freeze_(layer)


def _init_weights(model: MobileNetV2) -> None:
    """Kaiming-normal (fan_out) convs and unit-scale BN, as torchvision initializes MobileNetV2."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@register(MobileNetV2Config)
def build_mobilenet_v2(cfg: MobileNetV2Config, **context: object) -> MobileNetV2:
    """Build MobileNetV2 and, if ``cfg.pretrained`` is set, load and report the ImageNet file."""
    del context
    model = MobileNetV2(cfg)
    if cfg.pretrained is not None:
        report = load_pretrained(
            model,
            cfg.pretrained,
            ignore_prefixes=("classifier.",),
            field="MobileNetV2Config.pretrained",
        )
        log_load_report(report, "MobileNetV2")
        model.pretrained_report = report
    return model
