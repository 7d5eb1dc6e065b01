"""The int-label path of sigmoid_focal_loss (every pair scored as a negative, the positive rows'
label terms swapped) gives the one-hot formula's loss and gradient, for every reduction, weight
and dtype: bit for bit for ``reduction="none"`` (the element-wise ``torch.where`` formula), to
float round-off for the reduced losses."""

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
def test_labels_path_equals_one_hot_formula(dtype, reduction, avg_factor, weighted, gamma, alpha):
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
    assert loss_fast.dtype == dtype and loss_fast.shape == loss_ref.shape
    grad_out = torch.rand(loss_ref.shape, generator=g).to(dtype)
    loss_fast.backward(grad_out)
    loss_ref.backward(grad_out)
    if reduction == "none":
        assert torch.equal(loss_fast, loss_ref) and torch.equal(fast.grad, reference.grad)
    else:
        tol = {"rtol": 1e-12, "atol": 0} if dtype == torch.float64 else {"rtol": 2e-6, "atol": 0}
        torch.testing.assert_close(loss_fast, loss_ref, **tol)
        scale = reference.grad.abs().max()
        torch.testing.assert_close(
            fast.grad / scale, reference.grad / scale, atol=tol["rtol"], rtol=0
        )


def test_labels_path_on_extreme_logits():
    """Saturated sigmoids (|x| up to 60, beyond softplus's linear threshold of 20) give the
    one-hot formula's finite loss and gradients."""
    logits = torch.tensor([[-60.0, 0.0, 25.0], [60.0, -25.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([2, 0])
    fast, reference = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss_fast = sigmoid_focal_loss(fast, labels, reduction="sum")
    one_hot = labels_to_one_hot(labels, 3).to(logits.dtype)
    loss_ref = sigmoid_focal_loss(reference, one_hot, reduction="sum")
    loss_fast.backward()
    loss_ref.backward()
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_labels_path_hand_computed():
    # one positive pair (p = 0.5) and one negative (p = 0.5): alpha (0.5)^2 ln 2, (1-alpha) ...
    loss = sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([0]), reduction="none")
    ln2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss, torch.stack([0.25 * 0.25 * ln2, 0.75 * 0.25 * ln2])[None])
