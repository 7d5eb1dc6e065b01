"""Checkpoint weights checked against a built model before they are used for inference.

Without this check, a checkpoint of another architecture (or another ``num_classes``) loads by
name and fails at the first forward pass deep inside torch (``The size of tensor a (42) must
match the size of tensor b (40)``). Here every tensor's name and shape are compared first and
the mismatches are named in one line, as resuming a run does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from detfn.engine.checkpoint_io import CheckpointError

__all__ = ["fit_weights", "weight_mismatches"]

_SHOWN = 4  # mismatches named in the message; the counts say how many more


def weight_mismatches(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """``(missing names, [(name, expected shape, given shape)])``, both sorted by name.

    Names in ``given`` that ``expected`` lacks are not mismatches: a checkpoint may hold more
    (an EMA copy, a head the config dropped) than the model uses.
    """
    missing = sorted(set(expected) - set(given))
    shapes = [
        (name, tuple(tensor.shape), tuple(given[name].shape))
        for name, tensor in sorted(expected.items())
        if name in given and tuple(given[name].shape) != tuple(tensor.shape)
    ]
    return missing, shapes


def fit_weights(
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    where: str,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's params and buffers taken from ``given`` (by name) on ``device``.

    Args:
        params, buffers: the built model's tensors; their names and shapes are the reference.
        given: the checkpoint's tensors, params and buffers together.
        where: the checkpoint file, named in the error.

    Raises:
        CheckpointError: one line naming the tensors that are missing or have another shape
            (``name: expected (4, 1024), got (81, 1024)``), with their counts.
    """
    missing, shapes = weight_mismatches({**params, **buffers}, given)
    if missing or shapes:
        parts = []
        if shapes:
            shown = "; ".join(f"{n}: expected {e}, got {g}" for n, e, g in shapes[:_SHOWN])
            more = f"; and {len(shapes) - _SHOWN} more" if len(shapes) > _SHOWN else ""
            parts.append(f"{len(shapes)} tensor(s) of another shape ({shown}{more})")
        if missing:
            more = ", ..." if len(missing) > _SHOWN else ""
            parts.append(f"{len(missing)} missing ({', '.join(missing[:_SHOWN])}{more})")
        raise CheckpointError(
            f"{where}: does not fit the model: {'; '.join(parts)}. Was it saved by another "
            "architecture or num_classes? Use that run's config.json"
        )
    return (
        {k: given[k].to(device) for k in params},
        {k: given[k].to(device) for k in buffers},
    )
