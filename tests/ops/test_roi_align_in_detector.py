"""The CPU's sparse RoIAlign inside a detector: the ``func`` gradient backend still works.

Faster R-CNN's loss through torch.func (``value_and_grad(..., "func")``) gives the gradients of
the autograd backend, RoIAlign's backward included; and the anchors cache hands out plain
tensors that autograd and later steps can use.
"""

import torch

from detfn.apis import bccd_cpu_preset
from detfn.config import override
from detfn.engine.step import value_and_grad
from detfn.models.anchors import AnchorGeneratorConfig, grid_anchors
from detfn.models.functional import detector_loss_fn, split
from detfn.registry import build
from detfn.structures import Batch, ImageMeta


def tiny_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=g)
    boxes = torch.tensor([[[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]]]).repeat(2, 1, 1)
    metas = tuple(ImageMeta(f"t{i}", i, (64, 96), (64, 96), (64, 96)) for i in range(2))
    return Batch(
        images,
        boxes,
        torch.tensor([[0, 1], [2, 0]]),
        torch.ones(2, 2, dtype=torch.bool),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.bool),
        metas,
    )


def test_func_backend_equals_autograd_through_sparse_roi_align():
    torch.manual_seed(0)
    # sample every candidate so that both backends see the same RoIs without sharing an RNG
    cfg = override(
        bccd_cpu_preset().model, {"rpn_head.sampler.num": 10**6, "roi_head.sampler.num": 10**6}
    )
    model = build(cfg)
    params, buffers = split(model)
    batch = tiny_batch()
    loss_fn = detector_loss_fn(model)
    buffers_func = {k: v.clone() for k, v in buffers.items()}
    (loss_a, _), grads_a = value_and_grad(loss_fn)(params, buffers, batch)
    (loss_f, _), grads_f = value_and_grad(loss_fn, "func")(params, buffers_func, batch)
    torch.testing.assert_close(loss_f, loss_a)
    name = "roi_head.bbox_head.shared_fcs.0.weight"
    assert grads_a[name].abs().sum() > 0
    for key in ("backbone.conv1.weight", "neck.lateral_convs.0.weight", name):
        scale = grads_a[key].abs().max().item()
        torch.testing.assert_close(grads_f[key], grads_a[key], rtol=1e-4, atol=1e-5 * scale)


def test_grid_anchors_are_cached_per_shape_and_plain_tensors():
    cfg = AnchorGeneratorConfig(strides=(4, 8), ratios=(0.5, 1.0))
    with torch.inference_mode():
        first = grid_anchors(cfg, [(3, 4), (2, 2)])
    again = grid_anchors(cfg, [torch.Size((3, 4)), (2, 2)], "cpu")
    assert all(a is b for a, b in zip(first, again))
    assert not first[0].is_inference()
    other = grid_anchors(cfg, [(3, 5), (2, 3)])
    assert other[0].shape == (3 * 5 * 2, 4)
    # the second location of the first row is one stride right of the first
    torch.testing.assert_close(other[0][2:4], other[0][0:2] + torch.tensor([4.0, 0.0, 4.0, 0.0]))
