"""Test-time augmentation: merging by hand, equivariant input gives the plain result, config and
CLI wiring."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detfn.apis.tta import TestTimeAugConfig, predict_fn_for, tta_of, with_tta
from detfn.config import from_json, to_json
from detfn.data import default_test_pipeline
from detfn.data.coco import CocoDatasetConfig
from detfn.models.postprocess import rescale_detections
from detfn.models.tta import augment_batch, merge_aug_detections
from detfn.structures import Detections, ImageDetections, ImageMeta
from experiments import test as test_cli


def dets(boxes, scores, labels):
    return ImageDetections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.int64),
    )


def test_merge_averages_matched_boxes_and_scores():
    a = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.6], [0, 1])
    b = dets([[1, 1, 11, 11], [0, 0, 10, 10]], [0.7, 0.5], [0, 1])  # 2nd: other class, alone
    merged = merge_aug_detections([a, b], iou_thr=0.5)
    # class 0: the two boxes overlap (IoU 81/119 > 0.5): mean box, (0.9 + 0.7) / 2
    # class 1 box of a: only a found it: 0.6 / 2; class 1 box of b: 0.5 / 2
    expected = dets(
        [[0.5, 0.5, 10.5, 10.5], [50, 50, 60, 60], [0, 0, 10, 10]], [0.8, 0.3, 0.25], [0, 1, 1]
    )
    for got, want in zip(merged, expected):
        torch.testing.assert_close(got, want)


def test_merge_of_identical_results_is_the_result():
    a = dets([[0, 0, 10, 10], [2, 2, 12, 12], [30, 30, 40, 40]], [0.9, 0.4, 0.8], [0, 1, 0])
    merged = merge_aug_detections([a, a, a])
    order = torch.tensor([0, 2, 1])
    for got, want in zip(merged, (a.boxes[order], a.scores[order], a.labels[order])):
        torch.testing.assert_close(got, want)


def blob_predict(params, buffers, images, metas):
    """A flip- and scale-equivariant 'detector': the box around pixels of channel 0 above 0.5,
    score the blob's mean, in the network frame, mapped back by detfn's own rescale."""
    boxes, scores = [], []
    for image, meta in zip(images, metas):
        h, w = meta.img_shape
        on = image[0, :h, :w] > 0.5
        ys, xs = on.nonzero(as_tuple=True)
        boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
        scores.append(image[1, :h, :w].mean())
    d = len(metas)
    padded = Detections(
        torch.stack(boxes)[:, None],
        torch.stack(scores)[:, None],
        torch.zeros(d, 1, dtype=torch.int64),
        torch.ones(d, 1, dtype=torch.bool),
    )
    return rescale_detections(padded, metas)


def synthetic_batch():
    """Two images (an asymmetric blob each) as a test pipeline gives them: 40x60, padded to 64."""
    images = torch.zeros(2, 3, 64, 64)
    images[0, 0, 8:20, 4:30] = 1.0
    images[1, 0, 22:38, 40:58] = 1.0
    images[:, 1] = torch.tensor([0.25, 0.75])[:, None, None]
    meta = ImageMeta("x", 0, (40, 60), (40, 60), (64, 64))
    return images, (meta, dataclasses.replace(meta, image_id=1))


def test_tta_on_equivariant_input_equals_the_plain_result():
    images, metas = synthetic_batch()
    plain = blob_predict(None, None, images, metas)
    cfg = TestTimeAugConfig(scales=((120, 80),), flip=True)  # the original scale x 2, flipped
    augmented = with_tta(blob_predict, cfg)(None, None, images, metas)
    for p, a in zip(plain, augmented):
        for got, want in zip(a[:3], p[:3]):
            torch.testing.assert_close(got, want)


def test_augment_batch_metas():
    images, metas = synthetic_batch()
    out, new = augment_batch(images, metas, [(80, 120), (20, 30)], flip=True)
    assert out.shape == (2, 3, 96, 128)
    assert new[0].img_shape == (80, 120) and new[0].scale_factor == (2.0, 2.0, 2.0, 2.0)
    assert new[1].flip and new[1].flip_direction == "horizontal" and new[1].pad_shape == (96, 128)


def test_selectable_in_the_test_pipeline():
    pipeline = (*default_test_pipeline(scale=(320, 240)), TestTimeAugConfig(scales=((400, 300),)))
    cfg = CocoDatasetConfig(ann_file="a.json", pipeline=pipeline, test_mode=True)
    assert from_json(to_json(cfg), CocoDatasetConfig) == cfg
    assert tta_of(pipeline) == TestTimeAugConfig(scales=((400, 300),))
    assert tta_of(default_test_pipeline()) is None
    with pytest.raises(ValueError, match="nothing to do"):
        TestTimeAugConfig(flip=False)


def test_test_cli_with_tta(tiny_run, capsys):
    _, work_dir = tiny_run
    args = test_cli.TestArgs(
        config=str(work_dir / "config.json"),
        checkpoint=str(work_dir / "latest.pth"),
        device="cpu",
        num_workers=0,
        classwise=False,
    )
    tta = test_cli.main(dataclasses.replace(args, tta=True))
    assert 0.0 <= tta["bbox_mAP"] <= 1.0
    assert "bbox_mAP_copypaste" in capsys.readouterr().out


def test_predict_fn_for_wraps_only_when_asked():
    model = torch.nn.Linear(1, 1)
    plain = predict_fn_for(model, default_test_pipeline())
    assert plain.__name__ == "predict"
    assert predict_fn_for(model, default_test_pipeline(), tta=True).__name__ == "predict_tta"
