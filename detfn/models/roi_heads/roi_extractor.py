"""SingleRoIExtractor: pool each RoI from the one FPN level that matches its size.

mmdetection's rule (FPN paper, eq. 1, with the canonical 224-px box on level 4 rewritten as
``finest_scale`` = 56 px on level 0): a box of side ``s = sqrt(w * h)`` goes to level
``floor(log2(s / 56 + 1e-6))``, clamped to the available levels. So boxes under 112 px pool from
stride 4, 112-224 px from stride 8, 224-448 px from stride 16 and larger ones from stride 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detfn.config import Config, check, check_positive
from detfn.ops import multi_level_roi_align
from detfn.registry import register

__all__ = ["SingleRoIExtractor", "SingleRoIExtractorConfig", "map_roi_levels"]


@dataclass(frozen=True)
class SingleRoIExtractorConfig(Config):
    """RoIAlign over a feature pyramid (mmdet 2.x defaults of faster_rcnn_r50_fpn_1x_coco).

    Attributes:
        output_size: pooled side; the bbox head's ``roi_feat_size`` must match.
        sampling_ratio: samples per bin side; 0 is adaptive (``ceil(roi_side / output_size)``).
        aligned: pixel-centre (-0.5) alignment, mmcv's RoIAlign default.
        featmap_strides: stride of each level used, finest first; coarser extra levels are ignored.
        finest_scale: box side (px) at the boundary of level 0 and level 1, halved.
    """

    output_size: int = 7
    sampling_ratio: int = 0
    aligned: bool = True
    featmap_strides: tuple[int, ...] = (4, 8, 16, 32)
    finest_scale: int = 56

    def __post_init__(self) -> None:
        check_positive(self, "output_size", "finest_scale")
        check(
            self,
            "sampling_ratio",
            self.sampling_ratio >= 0,
            f"must be >= 0, got {self.sampling_ratio!r}",
        )
        check(
            self, "featmap_strides", len(self.featmap_strides) > 0, "must name at least one level"
        )
        check(
            self,
            "featmap_strides",
            all(s > 0 for s in self.featmap_strides),
            f"must be positive, got {self.featmap_strides!r}",
        )


def map_roi_levels(rois: Tensor, num_levels: int, finest_scale: float = 56.0) -> Tensor:
    """The pyramid level of each RoI.

    Args:
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)``, xyxy pixels.
        num_levels: levels available; the result is clamped to ``[0, num_levels - 1]``.
        finest_scale: see the module docstring.

    Returns:
        Tensor[K] int64 level indices.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    # +1e-6 keeps log2 finite for zero-area boxes and a side of exactly 112 px (rounded a hair
    # low by sqrt) on level 1, as mmdet does.
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


class SingleRoIExtractor(nn.Module):
    """Parameter-free module: ``forward(feats, rois) -> Tensor[K, C, S, S]``."""

    def __init__(self, cfg: SingleRoIExtractorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_inputs = len(cfg.featmap_strides)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Pool every RoI from its level.

        Args:
            feats: pyramid levels ``Tensor[B, C, H_l, W_l]``, finest first; only the first
                ``len(featmap_strides)`` are used.
            rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.

        Returns:
            Tensor[K, C, output_size, output_size], in the order of ``rois``.
        """
        cfg = self.cfg
        if len(feats) < self.num_inputs:
            raise ValueError(
                f"SingleRoIExtractor: got {len(feats)} feature maps, featmap_strides "
                f"{cfg.featmap_strides} needs {self.num_inputs}"
            )
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f"SingleRoIExtractor: rois must be [K, 5], got {tuple(rois.shape)}")
        levels = map_roi_levels(rois, self.num_inputs, cfg.finest_scale)
        # All levels at once (one sparse product on the CPU, one kernel call per level on CUDA).
        return multi_level_roi_align(
            feats[: self.num_inputs],
            rois,
            levels,
            [1.0 / stride for stride in cfg.featmap_strides],
            cfg.output_size,
            cfg.sampling_ratio,
            cfg.aligned,
        )


@register(SingleRoIExtractorConfig)
def build_single_roi_extractor(cfg: SingleRoIExtractorConfig, **context) -> SingleRoIExtractor:
    """Build the extractor; ``context`` is unused (the extractor has no parameters)."""
    del context
    return SingleRoIExtractor(cfg)
