"""mmdetection's ``auto_scale_lr``: the learning rate grows linearly with the total batch size.

Goyal et al., "Accurate, Large Minibatch SGD" (2017): when the batch is multiplied by k, multiply
the lr by k. mmdetection's configs state the lr for ``base_batch_size = 16`` (8 GPUs x 2
images); a run with another total batch size scales it by ``world_size * samples_per_gpu / 16``.
"""

from __future__ import annotations

__all__ = ["scaled_lr"]


def scaled_lr(lr: float, world_size: int, samples_per_gpu: int, base_batch_size: int) -> float:
    """``lr * (world_size * samples_per_gpu) / base_batch_size``.

    Raises:
        ValueError: a non-positive size.
    """
    for name, value in (
        ("world_size", world_size),
        ("samples_per_gpu", samples_per_gpu),
        ("base_batch_size", base_batch_size),
    ):
        if value < 1:
            raise ValueError(f"auto_scale_lr: {name} must be >= 1, got {value}")
    return lr * (world_size * samples_per_gpu) / base_batch_size
