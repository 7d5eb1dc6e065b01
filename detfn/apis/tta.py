"""Test-time augmentation, selectable in a test pipeline: horizontal flip and several scales.

Put ``TestTimeAugConfig(...)`` at the end of a test pipeline (mmdetection puts its
``MultiScaleFlipAug`` there) or pass ``--tta`` to ``experiments.test``. The data path lets samples
through unchanged at the pipeline's own scale; :func:`predict_fn_for` then wraps the detector's
predict function so that each batch is also run resized to every scale in ``scales`` and
flipped, and the detections are merged (:func:`detfn.models.tta.merge_aug_detections`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from detfn.config import check, check_positive, check_unit_interval
from detfn.data.transforms.base import TransformConfig
from detfn.data.transforms.resize import rescale_size
from detfn.models.functional import detector_predict_fn
from detfn.models.tta import augment_batch, merge_aug_detections
from detfn.registry import register
from detfn.structures import ImageDetections, ImageMeta

__all__ = ["TestTimeAugConfig", "predict_fn_for", "tta_of", "with_tta"]


@dataclass(frozen=True)
class TestTimeAugConfig(TransformConfig):
    """Test-time augmentation (mmdetection's ``MultiScaleFlipAug`` + ``merge_aug_bboxes``).

    Attributes:
        scales: extra ``(long, short)`` scales, each resized to keep the aspect ratio as Resize
            does; the pipeline's own scale is always one of the augmentations.
        flip: also run every scale flipped horizontally.
        iou_thr: NMS IoU of the merge (mmdetection's ``rcnn.nms.iou_threshold``, 0.5).
        max_per_img: detections kept per image after the merge.
        size_divisor: padding of the resized batches (the test pipeline's Pad).
    """

    scales: tuple[tuple[int, int], ...] = ()
    flip: bool = True
    flip_direction: Literal["horizontal"] = "horizontal"
    iou_thr: float = 0.5
    max_per_img: int = 100
    size_divisor: int = 32
    __test__ = False  # not a pytest test class, whatever its name

    def __post_init__(self) -> None:
        check(self, "scales", all(min(s) > 0 for s in self.scales), "sizes must be positive")
        check(self, "flip", self.flip or bool(self.scales), "no flip and no scale: nothing to do")
        check_unit_interval(self, "iou_thr")
        check_positive(self, "max_per_img", "size_divisor")


@register(TestTimeAugConfig)
def build_test_time_aug(cfg: TestTimeAugConfig, **context: Any):
    """In the data pipeline the augmentation is a pass-through: it happens at predict time."""
    del cfg, context

    def passthrough(sample, generator: torch.Generator):
        return sample

    return passthrough


PredictFn = Callable[[Any, Any, torch.Tensor, Sequence[ImageMeta]], list[ImageDetections]]


def _sizes(metas: Sequence[ImageMeta], scale: tuple[int, int] | None) -> list[tuple[int, int]]:
    if scale is None:
        return [tuple(m.img_shape) for m in metas]
    return [rescale_size(m.ori_shape[0], m.ori_shape[1], scale) for m in metas]


def with_tta(predict: PredictFn, cfg: TestTimeAugConfig) -> PredictFn:
    """``predict`` run on every (scale, flip) augmentation of a batch, merged per image."""
    augmentations = [(scale, flip) for scale in (None, *cfg.scales) for flip in (False, True)]
    if not cfg.flip:
        augmentations = [(scale, False) for scale in (None, *cfg.scales)]

    def predict_tta(params, buffers, images, metas):
        per_aug = []
        for scale, flip in augmentations:
            if scale is None and not flip:
                per_aug.append(predict(params, buffers, images, metas))
                continue
            aug_images, aug_metas = augment_batch(
                images, metas, _sizes(metas, scale), flip, cfg.size_divisor
            )
            per_aug.append(predict(params, buffers, aug_images, aug_metas))
        return [
            merge_aug_detections(list(dets), cfg.iou_thr, cfg.max_per_img) for dets in zip(*per_aug)
        ]

    return predict_tta


def tta_of(pipeline: Sequence[Any]) -> TestTimeAugConfig | None:
    """The pipeline's test-time augmentation, if it has one."""
    found = [t for t in pipeline if isinstance(t, TestTimeAugConfig)]
    return found[-1] if found else None


def predict_fn_for(model: torch.nn.Module, pipeline: Sequence[Any] = (), tta: bool = False):
    """The predict function of a test run: with the pipeline's ``TestTimeAugConfig``, or the
    default one when ``tta`` is set, else the plain one."""
    predict = detector_predict_fn(model)
    cfg = tta_of(pipeline)
    if cfg is None and tta:
        cfg = TestTimeAugConfig()
    return predict if cfg is None else with_tta(predict, cfg)
