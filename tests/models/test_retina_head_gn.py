"""RetinaNet's head with GroupNorm towers (``RetinaHeadConfig(norm="GN")``, mmdetection's
``norm_cfg=dict(type="GN", num_groups=32)``) against torchvision's ``RetinaNetHead`` with
``norm_layer=GroupNorm(32)`` (the head of its ``retinanet_resnet50_fpn_v2``): same weights, same
outputs on every level."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from detfn.models.dense_heads.retina_head import RetinaHeadConfig
from detfn.registry import build
from experiments.torchvision_weights import retinanet_to_detfn


def test_gn_towers_match_torchvision_head():
    from torchvision.models.detection.retinanet import RetinaNetHead

    torch.manual_seed(0)
    reference = RetinaNetHead(64, 9, 3, norm_layer=partial(nn.GroupNorm, 32)).eval()
    for module in reference.modules():  # non-trivial affine GN parameters
        if isinstance(module, nn.GroupNorm):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    head = build(RetinaHeadConfig(feat_channels=64, norm="GN"), in_channels=64, num_classes=3)
    mapped = retinanet_to_detfn({f"head.{k}": v for k, v in reference.state_dict().items()})
    head.load_state_dict({k.removeprefix("bbox_head."): v for k, v in mapped.items()})
    assert head.cls_convs[0].conv.bias is None and head.cls_convs[0].gn.num_groups == 32

    feats = [torch.randn(2, 64, s, s + 2) for s in (8, 4)]
    with torch.no_grad():
        expected = reference(feats)
        levels = [head.forward_level(f) for f in feats]

    def flat(x: torch.Tensor, k: int) -> torch.Tensor:  # [B, A*k, H, W] -> [B, H*W*A, k]
        b, _, h, w = x.shape
        return x.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

    cls = torch.cat([flat(c, 3) for c, _ in levels], dim=1)
    reg = torch.cat([flat(r, 4) for _, r in levels], dim=1)
    torch.testing.assert_close(cls, expected["cls_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reg, expected["bbox_regression"], rtol=1e-5, atol=1e-5)


def test_norm_values_are_checked_with_one_line():
    with pytest.raises(ValueError, match="RetinaHeadConfig.norm"):
        RetinaHeadConfig(norm="BN")
    with pytest.raises(ValueError, match="RetinaHeadConfig.feat_channels"):
        RetinaHeadConfig(feat_channels=100, norm="GN")
