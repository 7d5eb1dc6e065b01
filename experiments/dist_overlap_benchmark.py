"""What overlapping the gradient all-reduce with the backward pass buys, on gloo.

``python -m experiments.dist_overlap_benchmark [--world 2] [--pairs 15] [--batch 4]``

Each rank trains torchvision's ResNet-18 (11.7 M parameters, 47 MB of fp32 gradients) on random
64x64 images through detfn's functional step; two ways of averaging the gradients alternate,
step by step, on equal work:

* ``after``: backward, then :meth:`GradSync.reduce` (all buckets launched, then waited for);
* ``overlap``: the bucket all-reduces start from gradient hooks during the backward.

Each timed step starts after a barrier; the report is the median over pairs of the ratio
overlap / after (below 1: overlap is faster), per bucket size.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from torch.func import functional_call

from detfn.dist.grad_sync import GradSync
from detfn.dist.launch import distributed
from detfn.engine.state import TrainState
from detfn.engine.step import make_train_step


def _loss_fn(model):
    def loss_fn(params, buffers, batch):
        x, y = batch
        loss = F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)
        return loss, {"loss_cls": loss}

    return loss_fn


def _timed(step, sync, state, batch) -> float:
    dist.barrier()
    start = time.perf_counter()
    grads = step(state, batch)["grads"]
    sync.reduce(grads)
    return time.perf_counter() - start


def _rank(rank: int, world: int, port: int, args, results) -> None:
    torch.set_num_threads(args.threads)
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    with distributed("pytorch", env=env):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).eval()  # BN in eval: no stat race
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        state = TrainState(params=params, buffers=buffers, opt_state=None, max_iters=1)
        g = torch.Generator().manual_seed(rank)
        batch = (
            torch.randn(args.batch, 3, 64, 64, generator=g),
            torch.randint(0, 10, (args.batch,)),
        )
        for cap_mb in args.caps:
            cap = int(cap_mb * 2**20)
            after = GradSync(params, cap_bytes=cap, overlap=False)
            over = GradSync(params, cap_bytes=cap, overlap=True)
            step_after = make_train_step(_loss_fn(model))
            step_over = make_train_step(over.wrap_loss_fn(_loss_fn(model)))
            for _ in range(2):  # warm-up
                _timed(step_after, after, state, batch)
                _timed(step_over, over, state, batch)
            grads = step_after(state, batch)["grads"]
            comm = []
            for _ in range(3):
                dist.barrier()
                start = time.perf_counter()
                after.reduce(grads)
                comm.append(time.perf_counter() - start)
            ratios, t_after, t_over = [], [], []
            for _ in range(args.pairs):
                a = _timed(step_after, after, state, batch)
                o = _timed(step_over, over, state, batch)
                t_after.append(a)
                t_over.append(o)
                ratios.append(o / a)
            if rank == 0:
                results[cap_mb] = (
                    len(after.buckets),
                    statistics.median(t_after),
                    statistics.median(t_over),
                    statistics.median(ratios),
                    statistics.median(comm),
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--caps", type=float, nargs="+", default=[25.0, 5.0])
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.start_processes(
        _rank, args=(args.world, port, args, results), nprocs=args.world, start_method="fork"
    )
    print(f"ResNet-18, {args.world} gloo ranks, batch {args.batch}/rank, 64x64, {args.pairs} pairs")
    print("bucket MB | buckets | all-reduce alone s | after-backward s | overlapped s | ratio")
    for cap, (n, a, o, r, c) in sorted(results.items(), reverse=True):
        print(f"{cap:9.1f} | {n:7d} | {c:18.3f} | {a:16.3f} | {o:12.3f} | {r:.3f}")


if __name__ == "__main__":
    main()
