"""`python -m experiments.faster_rcnn` flags: flat aliases, dotted fields, presets, help."""

from __future__ import annotations

import pytest

from detfn.engine.hooks.wandb import WandbHookConfig
from experiments.faster_rcnn import parse


def test_defaults_are_the_bccd_preset():
    from detfn.apis import bccd_cpu_preset

    assert parse([]) == bccd_cpu_preset()


def test_flat_aliases_reach_the_nested_fields():
    cfg = parse(
        [
            "--lr",
            "0.01",
            "--batch-size",
            "4",
            "--epochs",
            "3",
            "--seed",
            "7",
            "--work-dir",
            "/tmp/x",
            "--device",
            "cpu",
            "--wandb-project",
            "cells",
        ]
    )
    assert cfg.runner.optimizer.lr == 0.01 and cfg.data.train_loader.batch_size == 4
    assert cfg.runner.max_epochs == 3 and cfg.seed == 7 and cfg.work_dir == "/tmp/x"
    assert cfg.device == "cpu" and cfg.runner.wandb.project == "cells"


def test_dotted_flags_and_iteration_based_runs():
    cfg = parse(
        ["--runner.optimizer.momentum", "0.95", "--model.backbone.depth", "34", "--iters", "50"]
    )
    assert cfg.runner.optimizer.momentum == 0.95 and cfg.model.backbone.depth == 34
    assert cfg.runner.max_iters == 50 and cfg.runner.max_epochs is None


def test_no_wandb_and_coco_preset():
    assert parse(["--no-wandb"]).runner.wandb is None
    cfg = parse(["--preset", "coco", "--data-root", "/data/coco"])
    assert cfg.data.train.ann_file == "/data/coco/annotations/instances_train2017.json"
    assert cfg.model.backbone.depth == 50 and cfg.runner.wandb == WandbHookConfig(project="detfn")


def test_bad_flags_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        parse(["--preset", "nope"])
    with pytest.raises(SystemExit):
        parse(["--model.backbone.depth", "51"])
    assert "51" in capsys.readouterr().err


def test_help_lists_aliases_with_defaults(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    assert "--lr FLOAT" in out and "(default: 0.02)" in out and "--runner.optimizer.lr" in out


def test_fields_of_a_union_member_with_its_subcommand():
    # a bool flag of the default backbone needs its subcommand named first
    cfg = parse(
        ["model.backbone:res-net-config", "--model.backbone.zero-init-residual", "--lr", "0.01"]
    )
    assert cfg.model.backbone.zero_init_residual is True and cfg.model.backbone.depth == 18
    assert cfg.runner.optimizer.lr == 0.01
