"""detfn.ops.roi_align equals torchvision's RoIAlign and works under torch.func.grad.

The torchvision backend (CUDA's) is checked bit for bit here; the sparse backend (the CPU's
default) equals torchvision to float round-off (tests/ops/test_roi_align_sparse.py). The
torch.func, gradcheck and double-backward tests run on both.
"""

import pytest
import torch
import torchvision

from detfn.ops import roi_align


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 3, 12, 16, generator=gen)
    xy = torch.rand(6, 2, generator=gen) * 40
    wh = torch.rand(6, 2, generator=gen) * 30 + 1
    batch_idx = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.float32)[:, None]
    rois = torch.cat([batch_idx, xy, xy + wh], dim=1)
    return feats, rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_forward_and_input_grad_equal_torchvision_bitwise(aligned, sampling_ratio):
    feats, rois = _inputs()
    grad_out = torch.randn(6, 3, 7, 7, generator=torch.Generator().manual_seed(1))

    ours_in = feats.clone().requires_grad_(True)
    ours = roi_align(ours_in, rois, 7, 0.25, sampling_ratio, aligned, backend="torchvision")
    ours.backward(grad_out)

    ref_in = feats.clone().requires_grad_(True)
    ref = torchvision.ops.roi_align(ref_in, rois, 7, 0.25, sampling_ratio, aligned)
    ref.backward(grad_out)

    assert torch.equal(ours, ref)
    assert torch.equal(ours_in.grad, ref_in.grad)
    assert ours_in.grad.abs().sum() > 0


BACKENDS = pytest.mark.parametrize("backend", ["sparse", "torchvision"])


@BACKENDS
def test_torch_func_grad_through_roi_align_equals_backward(backend):
    feats, rois = _inputs(3)
    weight = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(4))

    def loss(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pooled = roi_align(x * w.mean(), rois, (2, 2), 0.25, 0, True, backend=backend)
        return (pooled * w).square().sum()

    grads_w, grads_x = torch.func.grad(loss, argnums=(0, 1))(weight, feats)
    (grad_w2, _), value = torch.func.grad_and_value(loss, argnums=(0, 1))(weight, feats)

    w_ref = weight.clone().requires_grad_(True)
    x_ref = feats.clone().requires_grad_(True)
    loss(w_ref, x_ref).backward()
    torch.testing.assert_close(grads_w, w_ref.grad)
    torch.testing.assert_close(grads_x, x_ref.grad)
    torch.testing.assert_close(grad_w2, w_ref.grad)
    assert value.item() == pytest.approx(loss(weight, feats).item())


@BACKENDS
def test_rectangular_output_size_and_empty_rois(backend):
    feats, rois = _inputs(5)
    out = roi_align(feats, rois, (3, 5), 0.5, 0, True, backend=backend)
    ref = torchvision.ops.roi_align(feats, rois, (3, 5), 0.5, 0, True)
    assert out.shape == (6, 3, 3, 5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    empty = roi_align(feats, rois[:0], 7, 0.5, 0, True, backend=backend)
    assert empty.shape == (0, 3, 7, 7)


def test_bad_rois_shape_names_the_shape():
    feats, rois = _inputs()
    with pytest.raises(ValueError, match=r"rois must be \[K, 5\], got shape \(6, 4\)"):
        roi_align(feats, rois[:, 1:], 7)


@BACKENDS
def test_gradcheck_and_double_backward_float64(backend):
    feats, rois = _inputs(7)
    feats = feats[:, :2, :6, :8].double().requires_grad_(True)
    rois = rois.double() / 4

    def fn(x):
        return roi_align(x, rois, 3, 0.5, 2, True, backend=backend)

    assert torch.autograd.gradcheck(fn, (feats,))
    assert torch.autograd.gradgradcheck(fn, (feats,))


@BACKENDS
def test_hessian_vector_product_under_torch_func(backend):
    # grad of (grad . v): exercises the backward Function under a transform, twice.
    feats, rois = _inputs(8)
    v = torch.randn_like(feats)

    def f(x):
        return roi_align(x, rois, 2, 0.25, 0, True, backend=backend).square().sum()

    hvp = torch.func.grad(lambda x: (torch.func.grad(f)(x) * v).sum())(feats)
    x = feats.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    (ref,) = torch.autograd.grad((g * v).sum(), x)
    torch.testing.assert_close(hvp, ref)
