"""The group sampler under data parallelism: rank shards of every global step, one seed shared by
the ranks, a new order every epoch (set_epoch)."""

from __future__ import annotations

from detfn.data import LoaderConfig
from detfn.data.group_sampler import plan_batches
from detfn.data.loader import DetectionLoader

FLAGS = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]  # 4 portrait, 7 landscape images


def _plans(epoch: int, seed: int = 3, world: int = 2, batch: int = 2):
    return [
        plan_batches(FLAGS, batch, seed=seed, epoch=epoch, rank=r, world_size=world)
        for r in range(world)
    ]


def test_ranks_take_disjoint_slices_of_each_single_group_step():
    rank0, rank1 = _plans(epoch=0)
    assert len(rank0) == len(rank1)  # every rank runs the same number of iterations
    for a, b in zip(rank0, rank1):
        step = a + b
        assert len({FLAGS[i] for i in step}) == 1  # one aspect group per global step
    everything = [i for plan in (rank0, rank1) for batch in plan for i in batch]
    assert set(everything) == set(range(len(FLAGS)))
    # each group is padded with its own images to a multiple of batch * world = 4: 4 + 8
    assert len(everything) == 12


def test_the_shared_seed_and_set_epoch_decide_the_order():
    assert _plans(epoch=0) == _plans(epoch=0)
    assert _plans(epoch=0) != _plans(epoch=1)
    assert _plans(epoch=0, seed=3) != _plans(epoch=0, seed=4)


class _Flags:
    def __init__(self, flags):
        self.aspect_flags = flags

    def __len__(self):
        return len(self.aspect_flags)


def test_the_loader_of_each_rank_follows_its_plan_and_reshuffles_per_epoch():
    cfg = LoaderConfig(batch_size=2, num_workers=0, seed=3)
    loaders = [DetectionLoader(_Flags(FLAGS), cfg, rank=r, world_size=2) for r in range(2)]
    assert [ld.plan() for ld in loaders] == _plans(epoch=0)
    for loader in loaders:
        loader.set_epoch(1)
    assert [ld.plan() for ld in loaders] == _plans(epoch=1)
    assert len(loaders[0]) == len(loaders[1]) == 3
