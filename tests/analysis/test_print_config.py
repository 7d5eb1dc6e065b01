"""print_config: a preset or a config.json, with dotted overrides, as loadable JSON."""

from __future__ import annotations

from detfn.apis import ExperimentConfig, bccd_cpu_preset
from detfn.config import from_json, load, override
from experiments import print_config


def test_preset_with_overrides(capsys):
    text = print_config.main(["--preset", "bccd", "--runner.optimizer.lr", "0.01", "--seed", "3"])
    assert capsys.readouterr().out.strip() == text.strip()
    expected = override(bccd_cpu_preset(), {"runner.optimizer.lr": 0.01, "seed": 3})
    assert from_json(text, ExperimentConfig) == expected


def test_config_json(tiny_run):
    cfg, work_dir = tiny_run
    text = print_config.main(
        ["--config", str(work_dir / "config.json"), "--model.backbone.depth", "34"]
    )
    got = from_json(text, ExperimentConfig)
    assert got == override(
        load(work_dir / "config.json", ExperimentConfig), "model.backbone.depth", 34
    )
    assert got.work_dir == cfg.work_dir
