"""norm="SyncBN": ResNet builds with SyncBatchNorm, and without a process group it is BN."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from detfn.models.backbones.norm import make_norm
from detfn.models.backbones.resnet import ResNetConfig
from detfn.registry import build


def test_syncbn_backbone_matches_bn_in_one_process():
    torch.manual_seed(0)
    bn = build(ResNetConfig(depth=18, norm="BN", frozen_stages=-1, norm_eval=False))
    sync = build(ResNetConfig(depth=18, norm="SyncBN", frozen_stages=-1, norm_eval=False))
    assert isinstance(make_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())
    assert sync.state_dict().keys() == bn.state_dict().keys()  # loads BN checkpoints as they are
    sync.load_state_dict(bn.state_dict())
    bn.train()
    sync.train()
    x = torch.randn(2, 3, 64, 64)
    params = dict(sync.named_parameters())
    buffers = {n: b.clone() for n, b in sync.named_buffers()}
    got = functional_call(sync, (params, buffers), (x,))
    want = bn(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    # the running statistics were updated in the buffers passed in, as BN's are
    torch.testing.assert_close(buffers["bn1.running_mean"], bn.bn1.running_mean)
