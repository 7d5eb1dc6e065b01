"""Train Mask R-CNN: ``python -m experiments.mask_rcnn [--preset nuclei|coco] [flags]``.

Presets:

* ``nuclei`` (default): R-18-FPN from scratch on the bundled DSB2018 nuclei (1 class, instance
  masks), sized for about 15 minutes on a 2-core CPU; keeps the best val ``segm_mAP`` and ends
  by printing the COCO bbox and segm metrics of the val split.
* ``coco``: mmdetection's ``mask_rcnn_r50_fpn_1x_coco`` exactly; give ``--data-root``.

The flags are those of ``experiments.faster_rcnn`` (one shared CLI, :mod:`experiments.cli`):
``--lr``, ``--batch-size``, ``--epochs``, ``--iters``, ``--work-dir``, ``--seed``, ``--device``,
``--wandb-project``, ``--no-wandb`` and every config field by its dotted flag
(``--model.roi-head.mask-branch.mask-thr-binary 0.4``); ``--help`` lists them all.
"""

from experiments.cli import entry_point, run

parse, main = entry_point("mask_rcnn", __doc__)

if __name__ == "__main__":
    run(parse, main)
