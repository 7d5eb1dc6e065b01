"""The toy data-parallel run of the 2-process tests, and its 1-process reference."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from detfn.apis.data_parallel import data_parallel
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.logger import TextLoggerHookConfig
from detfn.engine.hooks.optimizer import OptimizerHookConfig
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, train

N_ITEMS = 16
GLOBAL_BATCH = 4


class TinyNet(nn.Module):
    """Conv + GroupNorm + two linear layers: batch-independent normalization, so averaging
    per-rank gradients equals the gradient of the combined batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)
        self.unused = nn.Linear(3, 3)  # never in the graph: no gradient on any rank

    def forward(self, x):
        x = F.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return self.fc2(F.relu(self.fc1(x)))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_ITEMS, 3, 8, 8, generator=g), torch.randint(0, 3, (N_ITEMS,), generator=g)


class ShardLoader:
    """Global batches of ``GLOBAL_BATCH`` items in a fixed order; rank ``r`` of ``world`` takes
    the r-th slice of each (the combined batches are the 1-process loader's batches)."""

    def __init__(self, rank: int, world: int, fail_at: int | None = None):
        self.x, self.y = data()
        self.rank, self.world, self.fail_at = rank, world, fail_at
        self.per_rank = GLOBAL_BATCH // world

    def __len__(self) -> int:
        return N_ITEMS // GLOBAL_BATCH

    def set_epoch(self, epoch: int) -> None:
        """Same order every epoch (the sampler's reshuffle is tested with the real loader)."""
        del epoch

    def __iter__(self):
        for b in range(len(self)):
            if self.fail_at is not None and b == self.fail_at:
                raise OSError(f"deliberate loader failure on rank {self.rank}")
            start = b * GLOBAL_BATCH + self.rank * self.per_rank
            yield self.x[start : start + self.per_rank], self.y[start : start + self.per_rank]


def loss_fn_of(model: nn.Module, fail_rank: int | None = None, fail_call: int = 2):
    calls = {"n": 0}
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    def loss_fn(params, buffers, batch):
        calls["n"] += 1
        if fail_rank == rank and calls["n"] == fail_call:
            raise ValueError(f"deliberate failure on rank {rank}")
        x, y = batch
        logits = functional_call(model, (params, buffers), (x,))
        loss_cls = F.cross_entropy(logits, y)
        return loss_cls, {"loss_cls": loss_cls}

    return loss_fn


def runner_config(
    cumulative_iters: int = 1, epochs: int = 2, grad_backend: str = "autograd"
) -> RunnerConfig:
    return RunnerConfig(
        max_epochs=epochs,
        grad_backend=grad_backend,
        optimizer=SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3),
        optimizer_hook=OptimizerHookConfig(cumulative_iters=cumulative_iters),
        lr=None,
        checkpoint=CheckpointHookConfig(interval=1),
        text_logger=TextLoggerHookConfig(interval=1),
    )


def train_toy(
    env,
    out: Path,
    *,
    overlap: bool | None = None,
    cumulative_iters: int = 1,
    fail_rank: int | None = None,
    loader_fail_rank: int | None = None,
    grad_backend: str = "autograd",
) -> dict:
    """One rank's run; returns its final params (lists), the all-reduce count, its work dir."""
    torch.manual_seed(env.rank)  # a different init per rank: the broadcast must fix it
    model = TinyNet()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    work_dir = out / f"work_rank{env.rank}"
    cfg = runner_config(cumulative_iters, grad_backend=grad_backend)
    run = data_parallel(
        cfg,
        params=params,
        buffers=buffers,
        loss_fn=loss_fn_of(model, fail_rank),
        work_dir=work_dir,
        overlap=overlap,
        bucket_bytes=600,  # several buckets on a tiny model
    )
    fail_at = 1 if loader_fail_rank == env.rank else None
    state = train(
        run.cfg,
        params=params,
        buffers=buffers,
        loss_fn=run.loss_fn,
        train_loader=ShardLoader(env.rank, env.world_size, fail_at),
        work_dir=run.work_dir,
        hooks=run.hooks,
        hook_context=run.hook_context,
        logger=run.logger,
    )
    return {
        "params": {n: p.tolist() for n, p in state.params.items()},
        "calls": run.grad_sync.calls,
        "buckets": len(run.grad_sync.buckets),
        "updates": state.iter // cumulative_iters,
    }


def train_reference(
    work_dir: Path, cumulative_iters: int = 1, grad_backend: str = "autograd"
) -> dict[str, torch.Tensor]:
    """One process, rank 0's initialization, the combined batches."""
    torch.manual_seed(0)
    model = TinyNet()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    state = train(
        runner_config(cumulative_iters, grad_backend=grad_backend),
        params=params,
        buffers=buffers,
        loss_fn=loss_fn_of(model),
        train_loader=ShardLoader(0, 1),
        work_dir=work_dir,
    )
    return dict(state.params)
