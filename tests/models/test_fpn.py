"""FPN neck: output shapes for Faster R-CNN and RetinaNet layouts, extra levels, hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detfn.config import from_json, to_json
from detfn.models.necks import FPN, FPNConfig
from detfn.registry import build

IN_CHANNELS = (8, 16, 32, 64)
STRIDES = (4, 8, 16, 32)


def _feats(size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(2, c, size // s, size // s, generator=gen) for c, s in zip(IN_CHANNELS, STRIDES)
    )


def _set_identity_(conv: torch.nn.Conv2d) -> None:
    """Make a 1-channel conv the identity: centre tap 1, everything else 0."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
        conv.bias.zero_()


def test_default_gives_p2_to_p6():
    torch.manual_seed(0)
    fpn = build(FPNConfig(in_channels=IN_CHANNELS, out_channels=8))
    outs = fpn(_feats(128))
    assert [tuple(o.shape) for o in outs] == [(2, 8, s, s) for s in (32, 16, 8, 4, 2)]
    assert fpn.out_channels == (8,) * 5
    assert len(fpn.fpn_convs) == 4  # P6 is pooled, not convolved


def test_p6_is_max_pool_of_p5_also_for_odd_sizes():
    torch.manual_seed(0)
    fpn = FPN(FPNConfig(in_channels=IN_CHANNELS, out_channels=8, num_outs=6))
    feats = tuple(torch.randn(1, c, h, w) for c, (h, w) in zip(IN_CHANNELS, [(25, 39), (13, 20),
                                                                             (7, 10), (3, 5)]))  # fmt: skip
    outs = fpn(feats)
    assert torch.equal(outs[4], F.max_pool2d(outs[3], 1, stride=2))
    assert torch.equal(outs[5], F.max_pool2d(outs[4], 1, stride=2))
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 39), (13, 20), (7, 10), (3, 5), (2, 3),
                                                   (1, 2)]  # fmt: skip


def test_retinanet_layout_gives_p3_to_p7_from_c5():
    torch.manual_seed(0)
    cfg = FPNConfig(in_channels=IN_CHANNELS, out_channels=8, start_level=1, add_extra_convs=True)
    assert cfg.add_extra_convs == "on_input"
    fpn = build(cfg)
    assert len(fpn.lateral_convs) == 3 and fpn.fpn_convs[3].in_channels == IN_CHANNELS[-1]
    feats = _feats(128)
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    assert torch.allclose(outs[3], fpn.fpn_convs[3](feats[3]))
    assert torch.allclose(outs[4], fpn.fpn_convs[4](outs[3]))


@pytest.mark.parametrize("source", ["on_lateral", "on_output"])
def test_extra_conv_sources_and_relu(source):
    torch.manual_seed(0)
    cfg = FPNConfig(
        in_channels=IN_CHANNELS,
        out_channels=8,
        num_outs=6,
        add_extra_convs=source,
        relu_before_extra_convs=True,
    )
    fpn = FPN(cfg)
    feats = _feats(128)
    outs = fpn(feats)
    lateral = fpn.lateral_convs[3](feats[3])  # the coarsest lateral gets no top-down sum
    first_input = lateral if source == "on_lateral" else outs[3]
    assert torch.allclose(outs[3], fpn.fpn_convs[3](lateral))
    assert torch.allclose(outs[4], fpn.fpn_convs[4](first_input))
    assert torch.allclose(outs[5], fpn.fpn_convs[5](F.relu(outs[4])))


def test_top_down_sum_hand_case_with_odd_size():
    fpn = FPN(FPNConfig(in_channels=(1, 1), out_channels=1, num_outs=2))
    for conv in (*fpn.lateral_convs, *fpn.fpn_convs):
        _set_identity_(conv)
    fine = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    coarse = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    p_fine, p_coarse = fpn((fine, coarse))
    # nearest 2x2 -> 3x3 takes source index floor(i * 2 / 3) = 0, 0, 1 on each axis
    upsampled = torch.tensor([[10.0, 10.0, 20.0], [10.0, 10.0, 20.0], [30.0, 30.0, 40.0]])
    assert torch.equal(p_fine[0, 0], fine[0, 0] + upsampled)
    assert torch.equal(p_coarse, coarse)


def test_end_level_uses_a_subset_of_inputs():
    torch.manual_seed(0)
    fpn = FPN(FPNConfig(in_channels=IN_CHANNELS, out_channels=8, end_level=2, num_outs=3))
    outs = fpn(_feats(64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4] and len(fpn.lateral_convs) == 3


def test_xavier_uniform_init():
    torch.manual_seed(0)
    fpn = FPN(FPNConfig())
    conv = fpn.fpn_convs[0]
    fan_in = fan_out = 256 * 9
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.all(conv.bias == 0)


def test_lecun_uniform_init_is_torchvisions_bound_on_the_laterals():
    torch.manual_seed(0)
    fpn = FPN(
        FPNConfig(in_channels=(64, 128, 256, 512), out_channels=128, conv_init="lecun_uniform")
    )
    for lateral, fan_in in zip(fpn.lateral_convs, (64, 128, 256, 512)):
        bound = math.sqrt(3.0 / fan_in)  # torchvision FPN: kaiming_uniform_(a=1)
        weight = lateral.weight
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.05)
        assert torch.all(lateral.bias == 0)


def test_wrong_inputs_raise_one_line_error():
    fpn = FPN(FPNConfig(in_channels=IN_CHANNELS, out_channels=8))
    with pytest.raises(ValueError, match=r"channels \(8, 16, 32, 64\), got \(8, 16, 32\)"):
        fpn(_feats(64)[:3])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_outs": 3}, "num_outs"),
        ({"end_level": 1, "num_outs": 5}, "num_outs"),
        ({"start_level": 4}, "start_level"),
        ({"end_level": 7}, "end_level"),
        ({"add_extra_convs": "on_foo"}, "add_extra_convs"),
        ({"in_channels": ()}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=rf"FPNConfig\.{field} must"):
        FPNConfig(**kwargs)


def test_config_round_trips_json():
    for cfg in (FPNConfig(), FPNConfig(start_level=1, add_extra_convs="on_output", num_outs=5)):
        assert from_json(to_json(cfg), FPNConfig) == cfg
