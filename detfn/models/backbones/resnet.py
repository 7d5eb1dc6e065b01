"""ResNet backbone (He et al. 2016), pytorch style, returning the feature maps of chosen stages.

"pytorch style" (mmdet's default) puts a Bottleneck's stride on its 3x3 conv, as torchvision does;
"caffe style" put it on the first 1x1 conv. State-dict names equal torchvision's (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...), so a torchvision ImageNet file loads
by name.

References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
    https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from detfn.config import Config, check, check_in_range
from detfn.models.backbones.norm import (
    NORM_KINDS,
    NormKind,
    conv_norm,
    freeze_,
    has_trainable_affine,
    make_norm,
    set_batch_norm_eval_,
)
from detfn.models.backbones.pretrained import LoadReport, load_pretrained, log_load_report
from detfn.registry import register

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNetConfig", "build_resnet"]


Style = Literal["pytorch", "caffe"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

    expansion: ClassVar[int] = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormKind
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else _shortcut(self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, plus shortcut: ResNet-50/101/152."""

    expansion: ClassVar[int] = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: NormKind,
        style: Style = "pytorch",
    ) -> None:
        super().__init__()
        # "pytorch": stride on the 3x3 conv (torchvision); "caffe": on the first 1x1 conv
        stride1, stride2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride2, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else _shortcut(self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        return self.relu(out + identity)


def _shortcut(downsample: nn.Sequential, x: Tensor) -> Tensor:
    """The projection shortcut ``Sequential(conv 1x1, norm)`` of a block's input."""
    conv, norm = downsample
    return conv_norm(conv, norm, x)


# depth -> (block, blocks per stage); the standard table of the ResNet paper.
ARCH: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STEM_CHANNELS = 64


@dataclass(frozen=True)
class ResNetConfig(Config):
    """mmdet ``ResNet`` (pytorch style); defaults are those of ``faster_rcnn_r50_fpn_1x_coco``.

    Attributes:
        depth: 18, 34, 50, 101 or 152.
        num_stages: residual stages built, 1-4.
        out_indices: stages whose output is returned (0 = ``layer1``, stride 4).
        frozen_stages: -1 trains everything; 0 freezes the stem; k also freezes stages 1..k.
        norm: "BN", "FrozenBN", "GN" (32 groups) or "SyncBN" (BN over all ranks).
        norm_eval: keep every BatchNorm in eval mode during training (fixed statistics).
        pretrained: path of a torchvision-format ImageNet state dict, or None.
        style: "pytorch" (stride on a Bottleneck's 3x3 conv) or "caffe" (on its first 1x1
            conv, for detectron-style weights such as FCOS's); BasicBlocks have one stride.
        zero_init_residual: start each block's last norm scale at 0, so every residual block begins
            as the identity (Goyal et al. 2017); mmdet's default. Not applied to FrozenBN.
    """

    depth: int = 50
    num_stages: int = 4
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    frozen_stages: int = 1
    norm: NormKind = "BN"
    norm_eval: bool = True
    pretrained: str | None = None
    zero_init_residual: bool = True
    style: Style = "pytorch"

    def __post_init__(self) -> None:
        check(self, "depth", self.depth in ARCH, f"must be one of {tuple(ARCH)}, got {self.depth}")
        check_in_range(self, "num_stages", 1, 4)
        check(
            self,
            "out_indices",
            len(self.out_indices) > 0
            and list(self.out_indices) == sorted(set(self.out_indices))
            and all(0 <= i < self.num_stages for i in self.out_indices),
            f"must be increasing stage indices in [0, {self.num_stages}), got {self.out_indices}",
        )
        check_in_range(self, "frozen_stages", -1, self.num_stages)
        check(
            self, "norm", self.norm in NORM_KINDS, f"must be one of {NORM_KINDS}, got {self.norm!r}"
        )
        check(
            self,
            "style",
            self.style in ("pytorch", "caffe"),
            f"must be 'pytorch' or 'caffe', got {self.style!r}",
        )


class ResNet(nn.Module):
    """ResNet trunk without the classifier; ``forward(x)`` returns the ``out_indices`` stage maps.

    Attributes:
        out_channels: channels of each returned map.
        out_strides: stride (input pixels per feature pixel) of each returned map.
    """

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained_report: LoadReport | None = None  # set by build_resnet
        block, blocks_per_stage = ARCH[cfg.depth]
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(cfg.norm, STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = STEM_CHANNELS
        self.stage_names: list[str] = []
        channels, strides = [], []
        for i, num_blocks in enumerate(blocks_per_stage[: cfg.num_stages]):
            planes, stride = STEM_CHANNELS * 2**i, 1 if i == 0 else 2
            stage = _make_stage(block, inplanes, planes, num_blocks, stride, cfg.norm, cfg.style)
            inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", stage)
            self.stage_names.append(f"layer{i + 1}")
            channels.append(inplanes)
            strides.append(4 * 2**i)
        self.out_channels = tuple(channels[i] for i in cfg.out_indices)
        self.out_strides = tuple(strides[i] for i in cfg.out_indices)
        _init_weights(self, cfg.zero_init_residual)
        self._freeze_stages()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Args: x (Tensor[B, 3, H, W]). Returns ``[B, C_i, H / s_i, W / s_i]`` per out index."""
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.cfg.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> ResNet:
        """Switch mode, then re-apply ``frozen_stages`` and ``norm_eval`` (mmdet semantics)."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.cfg.norm_eval:
            set_batch_norm_eval_(self)
        return self

    def _freeze_stages(self) -> None:
        if self.cfg.frozen_stages >= 0:
            freeze_(self.conv1)
            freeze_(self.bn1)
        for name in self.stage_names[: max(self.cfg.frozen_stages, 0)]:
            freeze_(getattr(self, name))


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    norm: NormKind,
    style: Style = "pytorch",
) -> nn.Sequential:
    """One stage: the first block changes stride/width (projection shortcut), the rest keep it."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            make_norm(norm, planes * block.expansion),
        )
    extra = (style,) if block is Bottleneck else ()
    blocks = [block(inplanes, planes, stride, downsample, norm, *extra)]
    blocks += [block(planes * block.expansion, planes, 1, None, norm) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def _init_weights(model: ResNet, zero_init_residual: bool) -> None:
    """Kaiming-normal (fan_out) convs, unit-scale norms, optionally zero last norm per block."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, (BasicBlock, Bottleneck)) and has_trainable_affine(
                module.last_norm
            ):
                nn.init.zeros_(module.last_norm.weight)


@register(ResNetConfig)
def build_resnet(cfg: ResNetConfig, **context: object) -> ResNet:
    """Build the ResNet and, if ``cfg.pretrained`` is set, load and report the ImageNet file.

    The :class:`LoadReport` is kept as ``model.pretrained_report`` and logged.
    """
    del context
    model = ResNet(cfg)
    if cfg.pretrained is not None:
        report = load_pretrained(
            model, cfg.pretrained, ignore_prefixes=("fc.",), field="ResNetConfig.pretrained"
        )
        log_load_report(report, f"ResNet-{cfg.depth}")
        model.pretrained_report = report
    return model
