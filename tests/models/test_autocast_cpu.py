"""``precision="bf16"`` on the CPU: a FrozenBN Faster R-CNN (backbone convolutions with folded
norms, sparse RoIAlign) computes its losses and gradients under bf16 autocast, close to float32.

Both custom CPU paths once failed there: the folded convolution's backward mixed bf16 and
float32 tensors, and autocast cast the sparse RoIAlign product to bf16, which the CSR kernels
lack.
"""

from __future__ import annotations

import torch

from detfn.apis import FASTER_RCNN_R50_FPN_1X_COCO
from detfn.config import override
from detfn.registry import build
from experiments.benchmark import BenchArgs, synthetic_batch


def losses_and_grad(model, batch, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        losses = model.loss(batch.images, batch, generator=torch.Generator().manual_seed(0))
    sum(v for k, v in losses.items() if "loss" in k).backward()
    grad = model.backbone.layer2[0].conv1.weight.grad.clone()
    return {k: float(v) for k, v in losses.items()}, grad


def test_bf16_autocast_trains_faster_rcnn_on_the_cpu():
    cfg = override(
        FASTER_RCNN_R50_FPN_1X_COCO.model,
        {
            "backbone.depth": 18,
            "backbone.norm": "FrozenBN",
            "neck.in_channels": (64, 128, 256, 512),
            "num_classes": 3,
            "class_names": None,
        },
    )
    torch.manual_seed(0)
    model = build(cfg).train()
    batch = synthetic_batch(BenchArgs(size=(128, 160), num_classes=3, boxes_per_image=4), "cpu")
    exact, grad_exact = losses_and_grad(model, batch, autocast=False)
    low, grad_low = losses_and_grad(model, batch, autocast=True)
    assert grad_low.dtype == torch.float32
    for name in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"):
        assert abs(low[name] - exact[name]) <= 0.1 * abs(exact[name]) + 1e-3, name
    cosine = torch.nn.functional.cosine_similarity(grad_low.flatten(), grad_exact.flatten(), dim=0)
    assert cosine > 0.9
