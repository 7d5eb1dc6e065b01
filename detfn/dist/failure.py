"""One rank's error stops every rank with that error, instead of a hang.

Collectives block until every rank joins, so a rank that raises leaves the others waiting in
their next collective until the process-group timeout. :func:`check_together` is a cheap
agreement point every rank reaches once per iteration (one all-reduce of one number): each
rank says whether it failed; when any did, the failing ranks' messages are gathered and every
other rank raises :class:`RankFailedError` with them, while the failing rank re-raises its own
error. A rank that fails *outside* the checked region (e.g. while loading data) calls
:func:`announce_failure` on its way out, which joins the same agreement point, so the others
stop at their next check.

Errors between two checks in code that also runs collectives (a hook after the gradient
all-reduce) cannot be matched this way; the process-group timeout (``distributed(timeout_s=)``)
bounds those, and ``torchrun`` ends the remaining processes when one exits with an error.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from detfn.dist.comm import all_gather_objects, get_rank, is_distributed

__all__ = ["RankFailedError", "announce_failure", "check_together", "describe", "guard_loss_fn"]

_TOLD = "_detfn_ranks_told"


class RankFailedError(RuntimeError):
    """Another rank failed; the message is that rank's error."""


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _vote(failed: bool) -> bool:
    """Whether any rank voted ``failed`` (one all-reduce of one number)."""
    backend_cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if backend_cuda else "cpu"
    flag = torch.tensor([1.0 if failed else 0.0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def _raise_for_others(own: BaseException | None) -> None:
    messages = all_gather_objects(None if own is None else describe(own))
    if own is not None:
        return
    failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
    text = "; ".join(f"rank {rank} failed with {m}" for rank, m in failed)
    raise RankFailedError(f"rank {get_rank()} stops because {text}")


def check_together(error: BaseException | None) -> None:
    """Agree on failure: raise :class:`RankFailedError` here when another rank failed.

    Args:
        error: this rank's error since the last check, or None. The caller re-raises its own
            error afterwards; this function only tells the others.
    """
    if not is_distributed():
        return
    if error is not None:
        setattr(error, _TOLD, True)
    if _vote(error is not None):
        _raise_for_others(error)


def announce_failure(error: BaseException) -> None:
    """On a failing rank's way out: let the others' next :func:`check_together` raise.

    It waits at most the process-group timeout for the others to reach the check; a failure to
    communicate is swallowed, since the original error is the one to report.
    """
    if not is_distributed() or isinstance(error, RankFailedError) or getattr(error, _TOLD, False):
        return
    with contextlib.suppress(Exception):  # the original error matters, not the farewell
        check_together(error)


def guard_loss_fn(loss_fn):
    """``loss_fn`` followed by :func:`check_together`: every rank learns after the forward pass
    whether one failed in it (the usual place: bad data, a NaN guard, out of memory)."""

    def guarded(params, buffers, batch):
        try:
            out = loss_fn(params, buffers, batch)
        except Exception as error:
            check_together(error)
            raise
        check_together(None)
        return out

    return guarded
