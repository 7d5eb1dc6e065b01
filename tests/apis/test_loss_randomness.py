"""Randomness inside the loss (the RPN and RoI samplers) comes only from a generator derived from
the run seed and the batch's place in the run: equal runs give equal losses, a loss call leaves
torch's global RNG alone, and a resumed loader stamps the same keys as the uninterrupted one."""

from __future__ import annotations

import pathlib

import torch

from detfn.apis import bccd_cpu_preset
from detfn.config import override
from detfn.data import (
    CocoDatasetConfig,
    LoaderConfig,
    LoadImageConfig,
    NormalizeConfig,
    PadConfig,
    RandomFlipConfig,
    ResizeConfig,
    build_loader,
)
from detfn.models.functional import detector_loss_fn, split
from detfn.registry import build

TINY = pathlib.Path(__file__).resolve().parents[1] / "assets" / "tiny"
PIPELINE = (
    LoadImageConfig(),
    ResizeConfig(scale=((96, 64),)),
    RandomFlipConfig(prob=0.5),
    NormalizeConfig(),
    PadConfig(size_divisor=32),
)


def tiny_loader(seed: int = 3):
    dataset = build(
        CocoDatasetConfig(
            ann_file=str(TINY / "bccd8" / "instances.json"),
            img_prefix=str(TINY / "bccd8" / "JPEGImages"),
            pipeline=PIPELINE,
        ),
        seed=0,
    )
    return build_loader(dataset, LoaderConfig(batch_size=2, num_workers=0, seed=seed))


def tiny_model():
    # small samplers so that both the RPN's and the RoI head's draws matter
    cfg = override(bccd_cpu_preset().model, {"rpn_head.sampler.num": 16, "roi_head.sampler.num": 8})
    torch.manual_seed(0)
    return build(cfg)


def test_equal_seeds_give_equal_losses_and_the_global_rng_is_untouched():
    model = tiny_model()
    params, buffers = split(model)
    batch = next(iter(tiny_loader()))
    assert batch.rng_key is not None
    loss = detector_loss_fn(model, seed=5)
    rng_before = torch.get_rng_state()
    first = loss(params, buffers, batch)[1]
    assert torch.equal(torch.get_rng_state(), rng_before)
    second = detector_loss_fn(tiny_model(), seed=5)(*split(tiny_model()), batch)[1]
    for name in first:
        assert torch.equal(first[name], second[name]), name
    # another run seed, or the same batch at another place in the run, draws other samples
    other_seed = detector_loss_fn(model, seed=6)(params, buffers, batch)[1]
    moved = detector_loss_fn(model, seed=5)(params, buffers, _with_key(batch, batch.rng_key + 1))[1]
    for other in (other_seed, moved):
        assert any(not torch.equal(first[n], other[n]) for n in ("loss_rpn_cls", "loss_cls"))


def _with_key(batch, key):
    import dataclasses

    return dataclasses.replace(batch, rng_key=key)


def test_resumed_loader_stamps_the_keys_of_the_uninterrupted_run():
    full = tiny_loader()
    full.set_epoch(1)
    reference = [b.rng_key for b in full]
    assert len(set(reference)) == len(reference) > 2
    first = tiny_loader()
    first.set_epoch(1)
    taken = []
    for batch in first:
        taken.append(batch.rng_key)
        if len(taken) == 2:
            break
    resumed = tiny_loader()
    resumed.load_state_dict(first.state_dict())
    resumed.set_epoch(1)
    assert taken + [b.rng_key for b in resumed] == reference
    epoch0 = tiny_loader()
    assert not set(b.rng_key for b in epoch0) & set(reference)
