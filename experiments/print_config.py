"""Print the resolved config as JSON: a preset or a config.json, with dotted overrides applied.

    python -m experiments.print_config --preset bccd --runner.optimizer.lr 0.01
    python -m experiments.print_config --config work_dirs/run/config.json --model.backbone.depth 50

Every config field is a dotted flag (``--help`` lists them with their values); the output loads
back with ``detfn.config.load(path, ExperimentConfig)``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import tyro

from detfn.apis import ExperimentConfig
from detfn.config import to_json
from experiments.tool_configs import resolve_config


def _pop(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of ``flag VALUE`` or ``flag=VALUE`` in argv, and argv without it."""
    value, rest, i = None, [], 0
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(flag + "="):
            value = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return value, rest


def resolved(argv: Sequence[str] | None = None) -> ExperimentConfig:
    """The config the command line describes."""
    args = list(sys.argv[1:] if argv is None else argv)
    config, args = _pop(args, "--config")
    preset, args = _pop(args, "--preset")
    base = resolve_config(config, preset)
    return tyro.cli(
        ExperimentConfig,
        default=base,
        args=args,
        description=__doc__,
        config=(tyro.conf.CascadeSubcommandArgs,),
    )


def main(argv: Sequence[str] | None = None) -> str:
    text = to_json(resolved(argv))
    print(text)
    return text


if __name__ == "__main__":
    main()
