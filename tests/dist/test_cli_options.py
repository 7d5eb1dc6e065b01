"""--config path.json with flags on top, --import of user modules, --launcher."""

from __future__ import annotations

import sys

import pytest

from detfn.apis import bccd_cpu_preset
from detfn.apis.cli_options import import_custom_modules, pop_option
from detfn.config import override, save
from detfn.dist.launch import pop_launcher
from experiments import faster_rcnn


def test_pop_option_takes_every_value_in_both_forms():
    values, rest = pop_option(["--a", "1", "--import", "x", "--import=y", "--b"], "--import")
    assert values == ["x", "y"] and rest == ["--a", "1", "--b"]
    with pytest.raises(SystemExit, match="--config needs a value"):
        pop_option(["--config"], "--config")


def test_config_file_is_the_base_and_flags_apply_on_top(tmp_path):
    saved = override(bccd_cpu_preset(), {"runner.optimizer.momentum": 0.8, "seed": 11})
    path = save(saved, tmp_path / "config.json")
    cfg = faster_rcnn.parse(["--config", str(path), "--lr", "0.5", "--no-wandb"])
    assert cfg.runner.optimizer.lr == 0.5  # the flag
    assert cfg.runner.optimizer.momentum == 0.8 and cfg.seed == 11  # the file
    assert cfg.runner.wandb is None
    assert cfg == override(saved, {"runner.optimizer.lr": 0.5, "runner.wandb": None})


def test_import_registers_user_modules(tmp_path, monkeypatch):
    (tmp_path / "my_components.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (module,) = import_custom_modules(["my_components"])
    assert module.IMPORTED and "my_components" in sys.modules
    with pytest.raises(SystemExit, match="--import no_such_module_xyz: No module named"):
        import_custom_modules(["no_such_module_xyz"])


def test_launcher_flag_and_torchrun_default():
    assert pop_launcher(["--launcher", "slurm", "--lr", "1"], env={}) == ("slurm", ["--lr", "1"])
    assert pop_launcher(["--lr", "1"], env={}) == ("none", ["--lr", "1"])
    torchrun = {"RANK": "0", "WORLD_SIZE": "2"}
    assert pop_launcher([], env=torchrun) == ("pytorch", [])
    assert pop_launcher([], env={"RANK": "0", "WORLD_SIZE": "1"}) == ("none", [])
    with pytest.raises(SystemExit, match="--launcher must be one of"):
        pop_launcher(["--launcher=mpi"], env={})
