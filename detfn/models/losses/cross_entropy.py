"""Cross-entropy losses: softmax over classes (R-CNN head) and sigmoid binary (RPN).

Semantics follow mmdet 2.x ``CrossEntropyLoss``: the element-wise loss is weighted and reduced by
:func:`~detfn.models.losses.reduction.weight_reduce_loss`, then multiplied by ``loss_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detfn.config import Config, check
from detfn.models.losses.base import Loss, bind_loss, check_loss_fields
from detfn.models.losses.reduction import Reduction, weight_reduce_loss
from detfn.registry import register

__all__ = [
    "CrossEntropyLossConfig",
    "binary_cross_entropy",
    "build_cross_entropy_loss",
    "cross_entropy",
    "labels_to_one_hot",
]


def cross_entropy(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    class_weight: tuple[float, ...] | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """Softmax cross-entropy.

    Args:
        pred (Tensor[N, C + 1]): logits; the last class is background in detfn heads.
        target (Tensor[N]): int64 class indices in ``[0, C]``; ``ignore_index`` gives loss 0.
        weight (Tensor[N] | None): per-sample weight.
        class_weight: per-class rescaling (``F.cross_entropy``'s ``weight``), length ``C + 1``.

    Returns:
        Tensor: ``[N]`` for ``reduction="none"``, else 0-d.
    """
    if pred.dim() != 2 or target.shape != pred.shape[:1]:
        raise ValueError(
            f"softmax cross_entropy takes pred [N, C] and target [N], got pred "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise ValueError(f"softmax cross_entropy takes int64 class indices, got {target.dtype}")
    per_class = _class_weight_tensor(class_weight, pred)
    loss = F.cross_entropy(
        pred, target.long(), weight=per_class, reduction="none", ignore_index=ignore_index
    )
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def labels_to_one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot float targets from class indices, mmdet's label convention for sigmoid losses.

    Args:
        labels (Tensor[N]): int class indices; ``num_classes`` (background) and negative values give
            an all-zero row.

    Returns:
        Tensor[N, num_classes]: float32 0/1.
    """
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.unsqueeze(-1) == classes).float()  # [N, num_classes]


def binary_cross_entropy(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
    avg_factor: float | Tensor | None = None,
    class_weight: tuple[float, ...] | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """Sigmoid binary cross-entropy with logits, one independent binary problem per element.

    Args:
        pred (Tensor[N] | Tensor[N, C]): logits.
        target: either float 0/1 (or soft) targets of ``pred``'s shape, or, for ``pred [N, C]``,
            int class indices ``[N]`` expanded to one-hot where ``C`` (background) gives all zeros
            and negative labels or ``ignore_index`` get weight 0 (mmdet's convention).
        weight: element-wise (``pred``'s shape) or per-row ``[N]`` weight.
        class_weight: BCE ``pos_weight`` per class, length ``C``.

    Returns:
        Tensor: ``pred``'s shape for ``reduction="none"``, else 0-d.
    """
    if pred.dim() == 2 and target.shape == pred.shape[:1] and not target.is_floating_point():
        valid = ((target >= 0) & (target != ignore_index)).to(pred.dtype)  # [N]
        weight = valid if weight is None else weight * valid
        target = labels_to_one_hot(target, pred.shape[1])
    if target.shape != pred.shape:
        raise ValueError(
            f"sigmoid binary_cross_entropy takes a target of pred's shape {tuple(pred.shape)} "
            f"(or int labels [N] for pred [N, C]), got {tuple(target.shape)}"
        )
    pos_weight = _class_weight_tensor(class_weight, pred)
    loss = F.binary_cross_entropy_with_logits(
        pred, target.to(pred.dtype), pos_weight=pos_weight, reduction="none"
    )
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _class_weight_tensor(class_weight: tuple[float, ...] | None, pred: Tensor) -> Tensor | None:
    if class_weight is None:
        return None
    num_classes = pred.shape[-1] if pred.dim() > 1 else 1
    if len(class_weight) != num_classes:
        raise ValueError(
            f"class_weight has {len(class_weight)} values but pred has {num_classes} classes"
        )
    return torch.tensor(class_weight, dtype=pred.dtype, device=pred.device)


@dataclass(frozen=True)
class CrossEntropyLossConfig(Config):
    """mmdet ``CrossEntropyLoss``: softmax over ``C + 1`` logits, or sigmoid (``use_sigmoid``).

    A head with ``use_sigmoid=True`` predicts ``C`` logits per anchor (no background logit).
    """

    use_sigmoid: bool = False
    loss_weight: float = 1.0
    reduction: Reduction = "mean"
    class_weight: tuple[float, ...] | None = None
    ignore_index: int = -100

    def __post_init__(self) -> None:
        check_loss_fields(self)
        if self.class_weight is not None:
            check(
                self,
                "class_weight",
                all(w >= 0 for w in self.class_weight),
                f"must be >= 0, got {self.class_weight!r}",
            )


@register(CrossEntropyLossConfig)
def build_cross_entropy_loss(cfg: CrossEntropyLossConfig, **context: object) -> Loss:
    """``Loss`` calling :func:`binary_cross_entropy` or :func:`cross_entropy`."""
    del context
    fn = binary_cross_entropy if cfg.use_sigmoid else cross_entropy
    return bind_loss(fn, cfg, class_weight=cfg.class_weight, ignore_index=cfg.ignore_index)
