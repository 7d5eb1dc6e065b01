"""ResNet backbone: shapes, torchvision equivalence, pretrained loading, freezing, norms."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from detfn.config import from_json, to_json
from detfn.models.backbones import ResNet, ResNetConfig, load_pretrained
from detfn.registry import build


def _randomize_bn_stats(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine values, so a wrong load changes the features."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _torchvision_stages(model: torchvision.models.ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize(
    ("depth", "channels"), [(18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))]
)
def test_output_shapes_and_strides(depth, channels):
    torch.manual_seed(0)
    model = build(ResNetConfig(depth=depth))
    outs = model(torch.randn(2, 3, 64, 96))
    assert model.out_channels == channels and model.out_strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))
    ]
    sub = build(ResNetConfig(depth=depth, num_stages=3, out_indices=(1, 2), frozen_stages=-1))
    assert sub.out_channels == channels[1:3] and sub.out_strides == (8, 16)
    assert len(sub(torch.randn(1, 3, 32, 32))) == 2 and not hasattr(sub, "layer4")


@pytest.mark.parametrize(
    ("depth", "factory"),
    [(18, torchvision.models.resnet18), (34, torchvision.models.resnet34),
     (50, torchvision.models.resnet50), (101, torchvision.models.resnet101)],
)  # fmt: skip
def test_parameter_names_and_count_equal_torchvision(depth, factory):
    with torch.device("meta"):  # shapes only: skips the weight initialization
        ours, reference = ResNet(ResNetConfig(depth=depth)), factory()
    theirs = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert list(ours.state_dict()) == list(theirs)
    assert all(v.shape == theirs[k].shape for k, v in ours.state_dict().items())
    ours_params = sum(p.numel() for p in ours.parameters())
    tv_params = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    assert ours_params == tv_params


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_pretrained_file_gives_torchvision_features(tmp_path, norm):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    _randomize_bn_stats(reference, seed=1)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = ResNetConfig(depth=18, pretrained=str(path), norm=norm, zero_init_residual=True)
    model = build(cfg).eval()
    report = model.pretrained_report
    assert report.is_clean and set(report.ignored) == {"fc.weight", "fc.bias"}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), _torchvision_stages(reference.eval(), x)
    # FrozenBN folds BN into one scale and shift, an equal formula with other float32 rounding;
    # the rounding grows with each stage's magnitude, so the tolerance is relative to it.
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()) + 1e-6)


def test_pretrained_report_names_mismatched_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, path)
    model = ResNet(ResNetConfig(depth=18))
    report = load_pretrained(model, path, ignore_prefixes=("fc.",))
    assert report.missing == ("layer1.0.conv1.weight",)
    assert report.unexpected == ("extra.weight",)
    assert report.shape_mismatch == (
        "layer2.0.conv2.weight: file (128, 128, 1, 1) vs model (128, 128, 3, 3)",
    )
    assert "missing in file (1): layer1.0.conv1.weight" in report.summary()
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_pretrained_gn_reports_bn_statistics_as_unexpected(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build(ResNetConfig(depth=18, norm="GN", pretrained=str(path)))
    assert "bn1.running_mean" in model.pretrained_report.unexpected
    assert not model.pretrained_report.missing


def test_pretrained_errors_are_one_line(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="ResNetConfig.pretrained: no such file") as info:
        build(ResNetConfig(depth=18, pretrained=str(missing)))
    assert "\n" not in str(info.value) and str(missing) in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read") as info:
        build(ResNetConfig(depth=18, pretrained=str(garbage)))
    assert "\n" not in str(info.value)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, unrelated)
    with pytest.raises(ValueError, match="no tensor of .* matches the model"):
        build(ResNetConfig(depth=18, pretrained=str(unrelated)))


def test_frozen_stages_have_no_trainable_parameters():
    torch.manual_seed(0)
    model = build(ResNetConfig(depth=18, frozen_stages=1, norm_eval=False)).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1.", "bn1.", "layer1.")) for n in frozen)
    assert len(frozen) == len([n for n, _ in model.named_parameters() if n.startswith(
        ("conv1.", "bn1.", "layer1."))])  # fmt: skip
    assert not model.layer1.training and not model.bn1.training and model.layer2.training
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in frozen)
    assert grads["layer2.0.conv1.weight"] is not None
    everything = build(ResNetConfig(depth=18, frozen_stages=-1))
    assert all(p.requires_grad for p in everything.parameters())
    stem_only = build(ResNetConfig(depth=18, frozen_stages=0))
    assert (
        not stem_only.conv1.weight.requires_grad and stem_only.layer1[0].conv1.weight.requires_grad
    )


def test_norm_eval_keeps_running_statistics():
    torch.manual_seed(0)
    model = build(ResNetConfig(depth=18, frozen_stages=-1, norm_eval=True)).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(2, 3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.layer2[0].bn1.weight.requires_grad  # affine still trains
    updating = build(ResNetConfig(depth=18, frozen_stages=-1, norm_eval=False)).train()
    updating(torch.randn(2, 3, 32, 32))
    assert not torch.equal(updating.layer2[0].bn1.running_mean, torch.zeros(128))


def test_gn_and_frozen_bn_variants():
    torch.manual_seed(0)
    gn = build(ResNetConfig(depth=18, norm="GN", frozen_stages=-1))
    norms = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    out = gn(torch.randn(1, 3, 32, 32))
    out[-1].sum().backward()
    assert gn.layer4[1].bn1.weight.grad is not None
    frozen = build(ResNetConfig(depth=18, norm="FrozenBN", frozen_stages=-1))
    conv_params = sum(m.weight.numel() for m in frozen.modules() if isinstance(m, nn.Conv2d))
    assert sum(p.numel() for p in frozen.parameters()) == conv_params
    assert "layer1.0.bn1.weight" in dict(frozen.named_buffers())


def test_zero_init_residual_starts_blocks_as_identity():
    model = ResNet(ResNetConfig(depth=50, zero_init_residual=True))
    assert all(torch.all(b.bn3.weight == 0) for b in model.layer1)
    assert torch.all(model.layer1[0].bn1.weight == 1)
    plain = ResNet(ResNetConfig(depth=50, zero_init_residual=False))
    assert torch.all(plain.layer1[0].bn3.weight == 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("depth", 42), ("num_stages", 5), ("out_indices", (2, 1)), ("out_indices", (0, 4)),
     ("frozen_stages", 5), ("frozen_stages", -2), ("norm", "LN")],
)  # fmt: skip
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=rf"ResNetConfig\.{field} must"):
        ResNetConfig(**{field: value})


def test_config_round_trips_json():
    cfg = ResNetConfig(depth=101, out_indices=(1, 3), norm="GN", pretrained="/x/r101.pth")
    assert from_json(to_json(cfg), ResNetConfig) == cfg


def test_caffe_style_puts_the_stride_on_the_first_1x1_conv():
    from detfn.models.backbones import ResNetConfig
    from detfn.registry import build

    caffe = build(ResNetConfig(depth=50, style="caffe"))
    pytorch = build(ResNetConfig(depth=50))
    block, same = caffe.layer2[0], pytorch.layer2[0]
    assert (block.conv1.stride, block.conv2.stride) == ((2, 2), (1, 1))
    assert (same.conv1.stride, same.conv2.stride) == ((1, 1), (2, 2))
    x = torch.randn(1, 3, 64, 64)
    assert [o.shape for o in caffe(x)] == [o.shape for o in pytorch(x)]
