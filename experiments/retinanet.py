"""Train RetinaNet: ``python -m experiments.retinanet [--preset bccd|coco] [flags]``.

Presets:

* ``bccd`` (default): RetinaNet R-18-FPN from scratch on the bundled BCCD blood cells (3
  classes), sized like Faster R-CNN's bccd preset; ends by printing the COCO metrics of the val
  split.
* ``coco``: mmdetection's ``retinanet_r50_fpn_1x_coco`` exactly; give ``--data-root``.

The flags are those of ``experiments.faster_rcnn`` (one shared CLI, :mod:`experiments.cli`):
``--lr``, ``--batch-size``, ``--epochs``, ``--iters``, ``--work-dir``, ``--seed``, ``--device``,
``--wandb-project``, ``--no-wandb`` and every config field by its dotted flag
(``--model.bbox-head.stacked-convs 2``); ``--help`` lists them all.
"""

from experiments.cli import entry_point, run

parse, main = entry_point("retinanet", __doc__)

if __name__ == "__main__":
    run(parse, main)
