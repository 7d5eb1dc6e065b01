"""MobileNetV2 backbone: shapes, torchvision layout and features, freezing, norm_eval."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from detfn.models.backbones import MobileNetV2, MobileNetV2Config
from detfn.models.backbones.mobilenet_v2 import make_divisible
from detfn.registry import build

# Last torchvision ``features`` index of each mmdet stage index 0-7 (see the module docstring).
STAGE_ENDS = (1, 3, 6, 10, 13, 16, 17, 18)


def _randomize_bn(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def test_default_output_shapes_and_strides():
    torch.manual_seed(0)
    model = build(MobileNetV2Config())
    outs = model(torch.randn(2, 3, 64, 96))
    assert model.out_channels == (24, 32, 96, 1280) and model.out_strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outs] == [
        (2, 24, 16, 24),
        (2, 32, 8, 12),
        (2, 96, 4, 6),
        (2, 1280, 2, 3),
    ]


def test_layout_and_parameter_count_equal_torchvision():
    ours = MobileNetV2(MobileNetV2Config()).state_dict()
    reference = torchvision.models.mobilenet_v2()
    theirs = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    ours_params = sum(p.numel() for p in MobileNetV2(MobileNetV2Config()).parameters())
    tv_params = sum(
        p.numel() for n, p in reference.named_parameters() if not n.startswith("classifier.")
    )
    assert ours_params == tv_params
    # torchvision's rounding rule for width multipliers
    assert [make_divisible(c * 0.75) for c in (32, 16, 24, 1280)] == [24, 16, 24, 960]
    narrow = MobileNetV2(MobileNetV2Config(widen_factor=0.5)).state_dict()
    tv_narrow = torchvision.models.mobilenet_v2(width_mult=0.5).state_dict()
    assert all(narrow[k].shape == tv_narrow[k].shape for k in narrow)


def test_pretrained_file_gives_torchvision_features(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None)
    _randomize_bn(reference, seed=2)
    path = tmp_path / "mnv2.pth"
    torch.save(reference.state_dict(), path)
    cfg = MobileNetV2Config(out_indices=tuple(range(8)), pretrained=str(path))
    model = build(cfg).eval()
    assert model.pretrained_report.is_clean
    assert set(model.pretrained_report.ignored) == {"classifier.1.weight", "classifier.1.bias"}
    x = torch.randn(1, 3, 64, 64)
    expected, y = [], x
    with torch.no_grad():
        for index, layer in enumerate(reference.eval().features):
            y = layer(y)
            if index in STAGE_ENDS:
                expected.append(y)
        ours = model(x)
    assert len(ours) == 8
    for a, b in zip(ours, expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_frozen_stages_and_gradients():
    torch.manual_seed(0)
    model = build(MobileNetV2Config(frozen_stages=2)).train()
    frozen_prefixes = tuple(f"features.{i}." for i in range(4))  # stem + stages 0 and 1
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen_prefixes)), name
    assert not model.features[3].training and model.features[4].training
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    assert model.features[0][0].weight.grad is None
    assert model.features[4].conv[0][0].weight.grad is not None
    stem_only = build(MobileNetV2Config(frozen_stages=0))
    assert not stem_only.features[0][0].weight.requires_grad
    assert stem_only.features[1].conv[0][0].weight.requires_grad


def test_norm_eval_keeps_running_statistics():
    torch.manual_seed(0)
    model = build(MobileNetV2Config(norm_eval=True)).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    updating = build(MobileNetV2Config(norm_eval=False)).train()
    updating(torch.randn(2, 3, 32, 32))
    assert not torch.equal(updating.features[0][1].running_mean, torch.zeros(32))


def test_frozen_bn_has_only_conv_parameters():
    model = build(MobileNetV2Config(norm="FrozenBN"))
    conv_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(p.numel() for p in model.parameters()) == conv_params
    assert len(model(torch.randn(1, 3, 32, 32))) == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("norm", "GN"), ("out_indices", (0, 8)), ("out_indices", ()), ("frozen_stages", 8),
     ("widen_factor", 0.0)],
)  # fmt: skip
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=rf"MobileNetV2Config\.{field} must"):
        MobileNetV2Config(**{field: value})
