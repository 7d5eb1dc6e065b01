"""Train Cascade R-CNN: ``python -m experiments.cascade_rcnn [--preset P | --mask] [flags]``.

Presets (``--mask`` picks the mask variant of the chosen one: ``nuclei`` -> ``nuclei-mask``,
``coco`` -> ``coco-mask``):

* ``nuclei`` (default): Cascade R-CNN R-18-FPN from scratch on the bundled DSB2018 nuclei, with
  the Mask R-CNN nuclei preset's settings (about 15 minutes of Mask R-CNN on a 2-core CPU; the
  three box stages cost more);
* ``nuclei-mask``: Cascade Mask R-CNN on the same data (a mask head per stage);
* ``coco`` / ``coco-mask``: mmdetection's ``cascade_rcnn_r50_fpn_1x_coco`` /
  ``cascade_mask_rcnn_r50_fpn_1x_coco`` exactly; give ``--data-root``.

The flags are those of ``experiments.faster_rcnn`` (one shared CLI, :mod:`experiments.cli`);
every config field is a dotted flag (``--model.roi-head.stage-loss-weights 1 0.5 0.5``).
"""

import sys
from collections.abc import Sequence

from experiments.cli import entry_point, run

_parse, main = entry_point("cascade_rcnn", __doc__)


def with_mask_flag(argv: Sequence[str]) -> list[str]:
    """``--mask`` turned into the mask variant of the chosen (or default) preset."""
    argv = list(argv)
    if "--mask" not in argv:
        return argv
    argv.remove("--mask")
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            argv[i + 1] = _mask_preset(argv[i + 1])
            return argv
        if arg.startswith("--preset="):
            argv[i] = "--preset=" + _mask_preset(arg.split("=", 1)[1])
            return argv
    return ["--preset", "nuclei-mask", *argv]


def _mask_preset(name: str) -> str:
    return name if name.endswith("-mask") else f"{name}-mask"


def parse(argv: Sequence[str] | None = None):
    """The experiment config of a command line (``--mask`` understood)."""
    return _parse(with_mask_flag(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    run(parse, main)
