"""torch.distributed for detfn: launch, collectives, bucketed gradient averaging, failure
agreement, distributed evaluation. Depends on torch only (and nothing of detfn above it), so
the engine, the apis and the experiments can all use it.
"""

from detfn.dist.comm import (
    all_gather_objects,
    broadcast_object,
    broadcast_tensors_,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    max_across_ranks,
    mean_scalars_across_ranks,
)
from detfn.dist.evaluation import evaluate_on_ranks, gather_in_order, merge_strided_shards
from detfn.dist.failure import RankFailedError, check_together, guard_loss_fn
from detfn.dist.grad_sync import GradSync
from detfn.dist.launch import LAUNCHERS, DistEnv, distributed, resolve_env
from detfn.dist.lr_scaling import scaled_lr

__all__ = [
    "LAUNCHERS",
    "DistEnv",
    "GradSync",
    "RankFailedError",
    "all_gather_objects",
    "broadcast_object",
    "broadcast_tensors_",
    "check_together",
    "distributed",
    "evaluate_on_ranks",
    "gather_in_order",
    "get_rank",
    "get_world_size",
    "guard_loss_fn",
    "is_distributed",
    "is_main_process",
    "max_across_ranks",
    "mean_scalars_across_ranks",
    "merge_strided_shards",
    "resolve_env",
    "scaled_lr",
]
