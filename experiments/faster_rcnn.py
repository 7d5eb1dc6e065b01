"""Train Faster R-CNN: ``python -m experiments.faster_rcnn [--preset bccd|coco] [flags]``.

Presets:

* ``bccd`` (default): R-18-FPN from scratch on the bundled BCCD blood cells (3 classes) at
  400x300, sized for a 2-core CPU; ends by printing the COCO metrics of the val split.
* ``coco``: mmdetection's ``faster_rcnn_r50_fpn_1x_coco`` exactly; give ``--data-root``.

Common knobs have flat flags (``--lr``, ``--batch-size``, ``--epochs``, ``--iters``, ``--work-dir``,
``--seed``, ``--device``, ``--wandb-project``, ``--no-wandb``); every config field is reachable by
its dotted flag (``--runner.optimizer.momentum 0.95``, ``--model.backbone.depth 50``); ``--help``
lists them all with the preset's defaults.
"""

from experiments.cli import entry_point, run

parse, main = entry_point("faster_rcnn", __doc__)

if __name__ == "__main__":
    run(parse, main)
