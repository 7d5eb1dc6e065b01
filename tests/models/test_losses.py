"""Loss values against hand-computed cases and torch / torchvision references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from detfn.config import from_json, to_json
from detfn.models.losses import (
    CrossEntropyLossConfig,
    FocalLossConfig,
    GIoULossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
    binary_cross_entropy,
    cross_entropy,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    weight_reduce_loss,
)
from detfn.registry import build

EPS32 = torch.finfo(torch.float32).eps


def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 50
    wh = torch.rand(n, 2, generator=generator) * 30 + 1
    return torch.cat([xy, xy + wh], dim=1)


# --- weight_reduce_loss ------------------------------------------------------------------------


def test_weight_reduce_loss_hand_values():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert weight_reduce_loss(loss, weight, "sum").item() == 8.0
    assert weight_reduce_loss(loss, weight, "mean").item() == 2.0
    assert torch.equal(weight_reduce_loss(loss, weight, "none"), torch.tensor([1.0, 0, 3, 4]))
    got = weight_reduce_loss(loss, weight, "mean", avg_factor=2.0)
    assert got.item() == pytest.approx(8.0 / (2.0 + EPS32), rel=1e-7)
    assert weight_reduce_loss(loss, None, "mean", avg_factor=torch.tensor(4.0)).item() == 2.5


def test_weight_reduce_loss_per_row_weight_broadcasts_over_last_axis():
    loss = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert weight_reduce_loss(loss, torch.tensor([1.0, 0.0, 2.0]), "sum").item() == 25.0
    per_column = torch.tensor([1.0, 0.0])  # broadcasts as the last axis
    assert weight_reduce_loss(loss, per_column, "sum").item() == 9.0


def test_weight_reduce_loss_errors():
    loss = torch.ones(3, 4)
    with pytest.raises(ValueError, match="avg_factor cannot be used"):
        weight_reduce_loss(loss, None, "sum", avg_factor=2.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        weight_reduce_loss(loss, None, "avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(5,\) does not fit a loss of shape \(3, 4\)"):
        weight_reduce_loss(loss, torch.ones(5), "mean")
    with pytest.raises(ValueError, match="avg_factor must be >= 0"):
        weight_reduce_loss(loss, None, "mean", avg_factor=-1.0)


# --- cross-entropy -----------------------------------------------------------------------------


def test_softmax_cross_entropy_hand_and_torch():
    pred = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([0, 0])
    # p(class 0) = 1/2 and 3/4
    expected = torch.tensor([math.log(2.0), -math.log(0.75)])
    assert torch.allclose(cross_entropy(pred, target, reduction="none"), expected)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=gen)
    labels = torch.randint(0, 5, (7,), generator=gen)
    assert torch.allclose(cross_entropy(logits, labels), F.cross_entropy(logits, labels))


def test_softmax_cross_entropy_class_weight_and_ignore_index():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, -100, 1, 0])
    cw = (1.0, 2.0, 0.5)
    loss = build(CrossEntropyLossConfig(class_weight=cw, reduction="none"))(logits, labels)
    ref = F.cross_entropy(logits, labels, weight=torch.tensor(cw), reduction="none")
    assert torch.allclose(loss, ref)
    assert loss[3].item() == 0.0
    with pytest.raises(ValueError, match="class_weight has 3 values but pred has 4"):
        cross_entropy(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), class_weight=cw)


def test_sigmoid_binary_cross_entropy_float_targets():
    pred = torch.tensor([0.0, 0.0, math.log(3.0)])
    target = torch.tensor([1.0, 0.0, 1.0])
    expected = torch.tensor([math.log(2.0), math.log(2.0), -math.log(0.75)])
    loss = build(CrossEntropyLossConfig(use_sigmoid=True, reduction="none"))(pred, target)
    assert torch.allclose(loss, expected)
    mean = build(CrossEntropyLossConfig(use_sigmoid=True))(pred, target)
    assert torch.allclose(mean, F.binary_cross_entropy_with_logits(pred, target))


def test_sigmoid_binary_cross_entropy_int_labels_expand_to_one_hot():
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn(4, 3, generator=gen)
    labels = torch.tensor([1, 3, 0, -1])  # 3 = background, -1 = ignored
    one_hot = torch.tensor([[0.0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    ref = F.binary_cross_entropy_with_logits(pred, one_hot, reduction="none")
    ref[3] = 0.0
    got = binary_cross_entropy(pred, labels, reduction="none")
    assert torch.allclose(got, ref)
    with pytest.raises(ValueError, match="target of pred's shape"):
        binary_cross_entropy(pred, torch.zeros(4, 2))


# --- focal -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_loss_matches_torchvision(reduction):
    gen = torch.Generator().manual_seed(3)
    pred = torch.randn(10, 4, generator=gen)
    target = (torch.rand(10, 4, generator=gen) > 0.7).float()
    got = build(FocalLossConfig(gamma=2.0, alpha=0.25, reduction=reduction))(pred, target)
    ref = torchvision.ops.sigmoid_focal_loss(pred, target, 0.25, 2.0, reduction)
    assert torch.allclose(got, ref, atol=1e-6)


def test_focal_loss_hand_case_and_int_labels():
    # gamma 0, alpha 0.5: half the BCE; logit 0 gives BCE log 2 for either target.
    pred = torch.zeros(1, 2)
    loss = sigmoid_focal_loss(
        pred, torch.tensor([[1.0, 0.0]]), gamma=0.0, alpha=0.5, reduction="sum"
    )
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)
    # gamma 2, alpha 0.25, logit 0 positive: 0.25 * 0.5**2 * log 2
    one = sigmoid_focal_loss(torch.zeros(1, 1), torch.ones(1, 1), reduction="sum")
    assert one.item() == pytest.approx(0.25 * 0.25 * math.log(2.0), rel=1e-6)
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 3, generator=gen)
    labels = torch.tensor([0, 3, 2, 1, 3])
    one_hot = F.one_hot(labels, 4)[:, :3].float()
    assert torch.allclose(sigmoid_focal_loss(logits, labels), sigmoid_focal_loss(logits, one_hot))


# --- L1 / smooth L1 ----------------------------------------------------------------------------


def test_l1_loss_hand_values_and_per_box_weight():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.zeros(2, 4)
    assert l1_loss(pred, target).item() == 1.75
    assert l1_loss(pred, target, torch.tensor([1.0, 0.0]), reduction="sum").item() == 10.0
    got = build(L1LossConfig(loss_weight=2.0))(pred, target, avg_factor=2)
    assert got.item() == pytest.approx(2.0 * 14.0 / (2 + EPS32), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(pred, torch.zeros(2, 3))


def test_smooth_l1_hand_values_and_torch_reference():
    pred = torch.tensor([0.5, 2.0, -0.1])
    target = torch.zeros(3)
    # beta 1: 0.5 * 0.25 = 0.125 ; 2 - 0.5 = 1.5 ; 0.5 * 0.01 = 0.005
    got = smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    assert torch.allclose(got, torch.tensor([0.125, 1.5, 0.005]))
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    got = build(SmoothL1LossConfig(beta=1.0 / 9.0))(a, b)
    assert torch.allclose(got, F.smooth_l1_loss(a, b, beta=1.0 / 9.0))


# --- GIoU --------------------------------------------------------------------------------------


def test_giou_loss_hand_values():
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    # disjoint: iou 0, hull 3, union 2 -> giou -1/3 ; identical: 0 ;
    # overlap 1, union 7, hull 9 -> giou 1/7 - 2/9
    expected = torch.tensor([1 + 1 / 3, 0.0, 1 - (1 / 7 - 2 / 9)])
    assert torch.allclose(giou_loss(pred, target, reduction="none"), expected, atol=1e-6)


def test_giou_loss_matches_torchvision_and_weight_forms():
    gen = torch.Generator().manual_seed(6)
    pred, target = _random_boxes(12, gen), _random_boxes(12, gen)
    got = build(GIoULossConfig())(pred, target)
    ref = torchvision.ops.generalized_box_iou_loss(pred, target, reduction="mean")
    assert torch.allclose(got, ref, atol=1e-5)
    w = torch.rand(12, generator=gen)
    per_box = giou_loss(pred, target, w, reduction="sum")
    per_coord = giou_loss(pred, target, w[:, None].expand(12, 4), reduction="sum")
    assert torch.allclose(per_box, per_coord)


# --- Loss object, configs, empty inputs, torch.func --------------------------------------------


def test_loss_weight_and_reduction_override():
    pred, target = torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2)
    loss = build(L1LossConfig(loss_weight=0.5))
    assert loss(pred, target).item() == 1.0
    assert loss(pred, target, reduction_override="sum").item() == 2.0
    assert torch.equal(loss(pred, target, reduction_override="none"), torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(pred, target, reduction_override="avg")  # type: ignore[arg-type]
    assert loss.cfg == L1LossConfig(loss_weight=0.5)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (L1LossConfig, "loss_weight", -1.0),
        (SmoothL1LossConfig, "beta", 0.0),
        (FocalLossConfig, "gamma", -0.5),
        (FocalLossConfig, "alpha", 1.5),
        (GIoULossConfig, "eps", 0.0),
        (CrossEntropyLossConfig, "reduction", "avg"),
        (CrossEntropyLossConfig, "class_weight", (1.0, -1.0)),
    ],
)
def test_config_validation(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field} must"):
        cls(**{field: value})


def test_configs_round_trip_json():
    for cfg in (
        CrossEntropyLossConfig(use_sigmoid=True, class_weight=(1.0, 2.0)),
        FocalLossConfig(gamma=1.5),
        L1LossConfig(reduction="sum"),
        SmoothL1LossConfig(beta=0.5),
        GIoULossConfig(loss_weight=2.0),
    ):
        assert from_json(to_json(cfg), type(cfg)) == cfg


@pytest.mark.parametrize(
    ("cfg", "pred_shape", "target"),
    [
        (CrossEntropyLossConfig(), (0, 4), torch.zeros(0, dtype=torch.long)),
        (CrossEntropyLossConfig(use_sigmoid=True), (0,), torch.zeros(0)),
        (FocalLossConfig(), (0, 3), torch.zeros(0, dtype=torch.long)),
        (L1LossConfig(), (0, 4), torch.zeros(0, 4)),
        (SmoothL1LossConfig(), (0, 4), torch.zeros(0, 4)),
        (GIoULossConfig(), (0, 4), torch.zeros(0, 4)),
    ],
)
@pytest.mark.parametrize("avg_factor", [None, 0.0])
def test_empty_inputs_give_zero_with_gradient(cfg, pred_shape, target, avg_factor):
    pred = torch.zeros(pred_shape, requires_grad=True)
    loss = build(cfg)(pred, target, avg_factor=avg_factor)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


def test_losses_work_under_torch_func_grad():
    target = torch.tensor([[1.0, -1.0]])
    grad = torch.func.grad(lambda p: build(L1LossConfig())(p, target, reduction_override="sum"))
    assert torch.equal(grad(torch.zeros(1, 2)), torch.tensor([[-1.0, 1.0]]))
