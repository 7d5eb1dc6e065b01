"""The int-label path of sigmoid_focal_loss (torch.where on the positives) gives the one-hot
formula's loss and gradient bit for bit, for every reduction, weight and dtype."""

import pytest
import torch

from detfn.models.losses.cross_entropy import labels_to_one_hot
from detfn.models.losses.focal import sigmoid_focal_loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("reduction", "avg_factor", "weighted"),
    [("mean", 17.0, True), ("mean", None, False), ("sum", None, True), ("none", None, False)],
)
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (1.5, 0.3), (0.0, 0.5)])
def test_labels_path_equals_one_hot_formula_bitwise(
    dtype, reduction, avg_factor, weighted, gamma, alpha
):
    g = torch.Generator().manual_seed(0)
    num, classes = 300, 7
    logits = (torch.randn(num, classes, generator=g) * 4).to(dtype)
    # background (= classes) and ignored (-1) rows too
    labels = torch.randint(-1, classes + 1, (num,), generator=g)
    weight = torch.rand(num, generator=g).to(dtype) if weighted else None
    kwargs = dict(reduction=reduction, avg_factor=avg_factor, gamma=gamma, alpha=alpha)

    fast = logits.clone().requires_grad_()
    reference = logits.clone().requires_grad_()
    loss_fast = sigmoid_focal_loss(fast, labels, weight, **kwargs)
    one_hot = labels_to_one_hot(labels, classes).to(dtype)
    loss_ref = sigmoid_focal_loss(reference, one_hot, weight, **kwargs)
    assert loss_fast.dtype == dtype
    assert torch.equal(loss_fast, loss_ref)
    grad_out = torch.rand(loss_ref.shape, generator=g).to(dtype)
    loss_fast.backward(grad_out)
    loss_ref.backward(grad_out)
    assert torch.equal(fast.grad, reference.grad)


def test_labels_path_hand_computed():
    # one positive pair (p = 0.5) and one negative (p = 0.5): alpha (0.5)^2 ln 2, (1-alpha) ...
    loss = sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([0]), reduction="none")
    ln2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss, torch.stack([0.25 * 0.25 * ln2, 0.75 * 0.25 * ln2])[None])
