"""Group sampling, sharding, mid-epoch resume, worker seeding and collation."""

from __future__ import annotations

import math
import pathlib
from collections import Counter

import pytest
import torch

from detfn.data import (
    BCCD_CLASSES,
    CocoDatasetConfig,
    LoaderConfig,
    LoadImageConfig,
    NormalizeConfig,
    PadConfig,
    PhotoMetricDistortionConfig,
    RandomFlipConfig,
    RepeatDatasetConfig,
    ResizeConfig,
    Sample,
    Skipped,
    build_loader,
    collate,
    plan_batches,
)
from detfn.registry import build
from detfn.structures import ImageMeta

TINY = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny"
FLAGS = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1]  # 8 wide, 3 tall


def test_group_batches_hold_one_orientation_and_cover_everything():
    batches = plan_batches(FLAGS, 2, seed=0, epoch=0)
    assert all(len({FLAGS[i] for i in b}) == 1 for b in batches)
    assert all(len(b) == 2 for b in batches)
    # mmdetection's GroupSampler size: each group padded to a multiple of the batch size
    assert len(batches) == math.ceil(8 / 2) + math.ceil(3 / 2)
    assert set(i for b in batches for i in b) == set(range(len(FLAGS)))
    counts = Counter(i for b in batches for i in b)
    assert sum(counts.values()) - len(FLAGS) == 1  # one repeat pads the tall group


def test_plans_depend_only_on_seed_and_epoch():
    assert plan_batches(FLAGS, 2, seed=3, epoch=1) == plan_batches(FLAGS, 2, seed=3, epoch=1)
    assert plan_batches(FLAGS, 2, seed=3, epoch=1) != plan_batches(FLAGS, 2, seed=3, epoch=2)
    assert plan_batches(FLAGS, 2, seed=3, epoch=1) != plan_batches(FLAGS, 2, seed=4, epoch=1)


def test_distributed_shards_are_disjoint_steps_of_one_group():
    world = 3
    ranks = [
        plan_batches(FLAGS, 2, seed=1, epoch=5, rank=r, world_size=world) for r in range(world)
    ]
    assert len({len(r) for r in ranks}) == 1
    # each group padded to a multiple of batch * world: 8 -> 12, 3 -> 6 images: 3 steps
    assert len(ranks[0]) == 12 // 6 + 6 // 6
    seen = Counter()
    for step in zip(*ranks):
        assert len({FLAGS[i] for b in step for i in b}) == 1  # a global step is one group
        seen.update(i for b in step for i in b)
    assert set(seen) == set(range(len(FLAGS))) and sum(seen.values()) == 18
    drop = plan_batches(FLAGS, 2, seed=1, epoch=5, rank=0, world_size=world, drop_last=True)
    assert len(drop) == 1  # only the wide group fills one 6-image step


def test_evaluation_plan_keeps_order_and_drops_nothing():
    assert plan_batches(FLAGS, 4, shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    shards = [plan_batches(FLAGS, 2, shuffle=False, rank=r, world_size=2) for r in range(2)]
    assert shards[0] == [[0, 2], [4, 6], [8, 10]] and shards[1] == [[1, 3], [5, 7], [9]]
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        plan_batches(FLAGS, 2, rank=2, world_size=2)


PIPELINE = (
    LoadImageConfig(),
    ResizeConfig(scale=((64, 40),)),
    RandomFlipConfig(prob=0.5),
    PhotoMetricDistortionConfig(),
    NormalizeConfig(),
    PadConfig(size_divisor=32),
)


def coco8_repeat(times: int = 2):
    inner = CocoDatasetConfig(
        ann_file=str(TINY / "coco8" / "annotations" / "instances.json"),
        img_prefix=str(TINY / "coco8" / "images"),
        pipeline=PIPELINE,
    )
    return build(RepeatDatasetConfig(dataset=inner, times=times), seed=7)


def ids(batches):
    return [tuple(m.image_id for m in b.metas) for b in batches]


def test_mid_epoch_resume_yields_exactly_the_remaining_batches():
    ds = coco8_repeat()
    cfg = LoaderConfig(batch_size=2, num_workers=0, seed=11)
    full = build_loader(ds, cfg)
    full.set_epoch(1)
    reference = list(full)
    # 7 train images (one empty dropped) x 2: 12 wide -> 6 batches, 2 tall -> 1
    assert len(reference) == len(full) == 7 and full.state_dict() == {"epoch": 1, "batches_done": 7}
    first = build_loader(ds, cfg)
    first.set_epoch(1)
    taken = []
    for batch in first:
        taken.append(batch)
        if len(taken) == 3:
            break
    state = first.state_dict()
    assert state == {"epoch": 1, "batches_done": 3}
    resumed = build_loader(ds, cfg)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the engine's usual call keeps the position of the same epoch
    rest = list(resumed)
    assert ids(taken + rest) == ids(reference)
    for a, b in zip(taken + rest, reference):
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert ids(list(resumed)) != ids(reference)  # a finished epoch moves on to epoch 2
    assert resumed.epoch == 2
    with pytest.raises(ValueError, match="'batches_done' 99 exceeds"):
        resumed.load_state_dict({"epoch": 0, "batches_done": 99})


def test_workers_give_the_same_batches_as_the_main_process():
    ds = coco8_repeat(1)
    main = list(build_loader(ds, LoaderConfig(batch_size=2, num_workers=0, seed=2)))
    workers = list(build_loader(ds, LoaderConfig(batch_size=2, num_workers=2, seed=2)))
    assert ids(main) == ids(workers)
    for a, b in zip(main, workers):
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)


def test_loader_batches_follow_aspect_groups():
    ds = coco8_repeat()
    loader = build_loader(ds, LoaderConfig(batch_size=2, num_workers=0))
    for batch in loader:
        flags = {m.ori_shape[1] / m.ori_shape[0] > 1 for m in batch.metas}
        assert len(flags) == 1
        assert batch.images.shape[-1] % 32 == 0 and batch.images.shape[-2] % 32 == 0


def test_test_loader_keeps_dataset_order():
    cfg = CocoDatasetConfig(
        ann_file=str(TINY / "bccd8" / "instances.json"),
        img_prefix=str(TINY / "bccd8" / "JPEGImages"),
        classes=BCCD_CLASSES,
        pipeline=(LoadImageConfig(), ResizeConfig(scale=((32, 24),))),
        test_mode=True,
    )
    ds = build(cfg)
    loader = build_loader(ds, LoaderConfig(batch_size=3, num_workers=0, shuffle=False))
    assert [i for b in ids(loader) for i in b] == list(ds.image_ids)
    assert [len(b) for b in loader] == [3, 3, 2]


def meta(h: int, w: int) -> ImageMeta:
    return ImageMeta("x.jpg", 0, (h, w), (h, w), (h, w))


def test_collate_pads_images_and_targets():
    a = Sample(
        torch.ones(3, 20, 30),
        torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
        torch.tensor([2, 0]),
        torch.zeros(0, 4),
        meta(20, 30),
    )
    b = Sample(
        torch.full((3, 33, 10), 2.0),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.int64),
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
        meta(33, 10),
    )
    batch = collate([a, Skipped("bad.jpg", "broken"), b], size_divisor=32, pad_value=-1.0)
    assert tuple(batch.images.shape) == (2, 3, 64, 32) and batch.skipped == ("bad.jpg",)
    assert (batch.images[0, :, :20, :30] == 1).all() and (batch.images[0, :, 20:] == -1).all()
    assert (batch.images[1, :, :33, :10] == 2).all() and (batch.images[1, :, :, 10:] == -1).all()
    assert batch.labels.tolist() == [[2, 0], [-1, -1]]
    assert batch.box_mask.tolist() == [[True, True], [False, False]]
    assert batch.boxes[1].abs().sum() == 0 and torch.equal(batch.boxes[0], a.boxes)
    assert batch.ignore_mask.tolist() == [[False], [True]]
    assert len(collate([Skipped("a.jpg", "x")])) == 0
