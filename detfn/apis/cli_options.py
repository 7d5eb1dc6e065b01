"""Command-line options every entry point shares, taken out of ``argv`` before tyro parses it.

* ``--config path.json``: start from a saved config (a run's ``config.json``) instead of the
  preset; the other flags apply on top of it, as mmdetection derives a config from a base file.
* ``--import my.module`` (repeatable): import modules that register user components (new
  backbones, heads, hooks) before the config is parsed, as mmdetection's ``custom_imports``.
* ``--launcher none|pytorch|slurm``: see :func:`detfn.dist.launch.pop_launcher`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

__all__ = ["import_custom_modules", "pop_option"]


def pop_option(argv: Sequence[str], name: str) -> tuple[list[str], list[str]]:
    """Every value of ``name`` (``--name value`` or ``--name=value``) and the other arguments.

    Raises:
        SystemExit: ``name`` without a value, as one line.
    """
    values: list[str] = []
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == name:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise SystemExit(f"{name} needs a value")
            values.append(items[i + 1])
            i += 2
            continue
        if item.startswith(name + "="):
            values.append(item.split("=", 1)[1])
        else:
            rest.append(item)
        i += 1
    return values, rest


def import_custom_modules(names: Sequence[str]) -> list[ModuleType]:
    """Import ``names`` (dotted module names) for their registrations.

    Raises:
        SystemExit: a module that cannot be imported, as one line naming it and the reason.
    """
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as error:
            raise SystemExit(f"--import {name}: {error}") from None
    return modules
