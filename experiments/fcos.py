"""Train FCOS: ``python -m experiments.fcos [--preset bccd|coco] [flags]``.

Presets:

* ``bccd`` (default): FCOS R-18-FPN from scratch on the bundled BCCD blood cells (3 classes),
  sized like Faster R-CNN's bccd preset; ends by printing the COCO metrics of the val split.
* ``coco``: mmdetection's ``fcos_r50_caffe_fpn_gn-head_1x_coco`` exactly; give ``--data-root``.

The flags are those of ``experiments.faster_rcnn`` (one shared CLI, :mod:`experiments.cli`);
``--help`` lists them all.
"""

from experiments.cli import entry_point

parse, main = entry_point("fcos", __doc__)

if __name__ == "__main__":
    main(parse())
