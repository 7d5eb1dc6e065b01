"""Instance masks in the data path: loading (polygon / RLE), bad masks, transforms, collate."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detfn.data import (
    AnnotationError,
    CocoDatasetConfig,
    DataWarning,
    LoadImageConfig,
    collate,
    masks_to_boxes,
    nuclei_dataset_config,
    parse_coco,
    resolve_path,
)
from detfn.data.dataset import records_to_coco_dict
from detfn.data.records import initial_sample
from detfn.data.transforms import (
    ExpandConfig,
    MinIoURandomCropConfig,
    PadConfig,
    RandomCropConfig,
    crop_sample,
    crop_to_patch,
    expand_sample,
    flip_sample,
    load_image,
    resize_sample,
)
from detfn.registry import build


def _coco(segmentation, height=8, width=8, bbox=(2, 2, 4, 3), iscrowd=0):
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 1,
                "bbox": list(bbox),
                "iscrowd": iscrowd,
                "segmentation": segmentation,
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _masks_of(data):
    records, _, _, _ = parse_coco(data, "x.json", "", with_mask=True)
    return [initial_sample(r).masks for r in records]


# A rectangle covering pixel columns 2..5 and rows 2..4 (pixel i spans [i, i + 1)).
_EXPECTED = torch.zeros((8, 8), dtype=torch.bool)
_EXPECTED[2:5, 2:6] = True


def test_polygon_and_rle_give_the_same_hand_computed_mask():
    polygon = [[2, 2, 6, 2, 6, 5, 2, 5]]
    rle = mask_utils.encode(np.asfortranarray(_EXPECTED.numpy().astype(np.uint8)))
    compressed = {"size": [8, 8], "counts": rle["counts"].decode()}
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = _EXPECTED.numpy().T.reshape(-1).astype(int)
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    uncompressed = {"size": [8, 8], "counts": runs}
    for seg in (polygon, compressed, uncompressed):
        (masks,) = _masks_of(_coco(seg))
        assert masks.dtype == torch.bool and masks.shape == (1, 8, 8)
        assert torch.equal(masks[0], _EXPECTED), seg
    assert masks_to_boxes(masks).tolist() == [[2.0, 2.0, 6.0, 5.0]]


def test_nuclei_polygon_and_rle_files_decode_identically():
    for split, images, instances in (("train", 60, 1273), ("val", 20, 612)):
        datasets = [
            build(nuclei_dataset_config(split, pipeline=(LoadImageConfig(),), rle=rle))
            for rle in (False, True)
        ]
        assert [len(d) for d in datasets] == [images, images]
        assert sum(len(r.boxes) for r in datasets[0].records) == instances
        for a, b in zip(datasets[0].records, datasets[1].records):
            ma, mb = initial_sample(a).masks, initial_sample(b).masks
            assert torch.equal(ma, mb)
            assert ma.shape == (len(a.boxes), a.height, a.width)
            # the json bbox is the tight pixel extent of the mask
            assert torch.equal(masks_to_boxes(ma), a.boxes)


def test_nuclei_loads_samples_with_masks():
    ds = build(nuclei_dataset_config("val"))
    assert ds.class_names == ("nucleus",) and len(ds) == 20
    sample = ds[0]
    assert sample.masks.shape == (len(sample.boxes), *sample.meta.img_shape)
    assert sample.meta.img_shape == (512, 512)  # 256x256 doubled by NUCLEI_SCALE
    boxes = masks_to_boxes(sample.masks)
    assert (boxes - sample.boxes).abs().max() <= 1.0


def test_bad_masks_are_dropped_and_counted_or_rejected():
    with pytest.warns(DataWarning, match=r"dropped 1 annotation.*ids 7"):
        (masks,) = _masks_of(_coco([]))
    assert masks.shape == (0, 8, 8)
    with pytest.warns(DataWarning, match="fewer than 3 points"):
        records, _, _, _ = parse_coco(_coco([[1, 1, 3, 3]]), "x.json", "", with_mask=True)
    assert len(records[0].boxes) == 0
    # a short part next to a valid one is dropped on its own, the annotation stays
    (masks,) = _masks_of(_coco([[1, 1, 3, 3], [2, 2, 6, 2, 6, 5, 2, 5]]))
    assert torch.equal(masks[0], _EXPECTED)
    with pytest.raises(AnnotationError, match=r"x.json: annotations\[0\].*size \[4, 8\]"):
        _masks_of(_coco({"size": [4, 8], "counts": "PP"}))
    with pytest.raises(AnnotationError, match="odd number"):
        _masks_of(_coco([[1, 1, 3, 3, 4]]))
    with pytest.raises(AnnotationError, match="polygons .* or RLE"):
        _masks_of(_coco("oops"))
    data = _coco([[2, 2, 6, 2, 6, 5, 2, 5]])
    del data["annotations"][0]["segmentation"]
    with pytest.raises(AnnotationError, match="no key 'segmentation'"):
        _masks_of(data)


def test_crowd_regions_need_no_mask_and_gt_dict_has_segmentations():
    data = _coco([[2, 2, 6, 2, 6, 5, 2, 5]])
    crowd = dict(data["annotations"][0], id=8, iscrowd=1, segmentation={"bad": 1})
    data["annotations"].append(crowd)
    records, _, names, cat_ids = parse_coco(data, "x.json", "", with_mask=True)
    assert len(records[0].boxes) == 1 and len(records[0].ignore_boxes) == 1
    gt = records_to_coco_dict(records, names, cat_ids)
    target, region = gt["annotations"]
    assert target["segmentation"] == [[2.0, 2.0, 6.0, 2.0, 6.0, 5.0, 2.0, 5.0]]
    assert target["area"] == 12.0  # pixel count, as COCO's area
    assert region["iscrowd"] == 1 and region["segmentation"] == [[2, 2, 6, 2, 6, 5, 2, 5]]


def test_without_with_mask_no_masks_are_loaded():
    cfg = nuclei_dataset_config("val", pipeline=(LoadImageConfig(),))
    ds = build(dataclasses.replace(cfg, with_mask=False))
    assert ds[0].masks is None and collate([ds[0]]).masks is None


# ---- transforms keep masks and boxes aligned --------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    ds = build(nuclei_dataset_config("train", pipeline=(LoadImageConfig(),)))
    s = ds.get(50)  # a 320x256 colour image (not square)
    assert s.meta.img_shape == (256, 320)
    assert torch.equal(masks_to_boxes(s.masks), s.boxes)
    return s


def _assert_aligned(s, tol=1.0):
    assert s.masks.shape == (len(s.boxes), *s.meta.img_shape)
    assert len(s.labels) == len(s.boxes)
    nonempty = s.masks.flatten(1).any(1)
    assert nonempty.all()
    err = (masks_to_boxes(s.masks) - s.boxes).abs().max()
    assert err <= tol, float(err)


def _assert_cropped(before, out, left, top):
    """A crop cuts masks and clips boxes with the same window. A box wholly inside it moves
    exactly with its mask; a box the window cuts contains the part of its mask left inside (a
    non-convex mask need not reach the window's edge: mmdetection's recompute_bbox=False)."""
    assert out.masks.shape == (len(out.boxes), *out.meta.img_shape)
    height, width = out.meta.img_shape
    window = torch.tensor([left, top, left + width, top + height], dtype=torch.float32)
    inside = (before.boxes[:, :2] >= window[:2]).all(1) & (before.boxes[:, 2:] <= window[2:]).all(1)
    offset = window[:2].repeat(2)
    kept_inside = [
        i
        for i, b in enumerate(out.boxes)
        if any(torch.equal(b + offset, c) for c in before.boxes[inside])
    ]
    assert len(kept_inside) == int(inside.sum())
    mask_boxes = masks_to_boxes(out.masks)
    assert torch.equal(mask_boxes[kept_inside], out.boxes[kept_inside])
    nonempty = out.masks.flatten(1).any(1)
    mb, ob = mask_boxes[nonempty], out.boxes[nonempty]
    assert (mb[:, :2] >= ob[:, :2]).all() and (mb[:, 2:] <= ob[:, 2:]).all()


@pytest.mark.parametrize("size", [(512, 640), (300, 400), (257, 321), (256, 320), (400, 333)])
def test_resize_keeps_masks_on_boxes(sample, size):
    out = resize_sample(sample, size)
    _assert_aligned(out)
    assert out.masks.shape[1:] == size


def test_downscale_keeps_masks_within_a_source_pixel(sample):
    # Nearest-neighbour downscaling skips source rows / columns, so a mask's extreme pixel can
    # vanish: the bound is one more source pixel (1.28 output px here), not one output pixel.
    out = resize_sample(sample, (200, 250))
    _assert_aligned(out, tol=1.0 + 256 / 200)


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_keeps_masks_on_boxes_exactly(sample, direction):
    out = flip_sample(sample, direction)
    _assert_aligned(out, tol=0.0)
    assert torch.equal(flip_sample(out, direction).masks, sample.masks)


def test_crop_keeps_and_drops_masks_with_their_boxes(sample):
    out = crop_sample(sample, left=100, top=40, height=150, width=120)
    assert 0 < len(out.boxes) < len(sample.boxes)
    _assert_cropped(sample, out, 100, 40)
    assert out.masks.shape[1:] == (150, 120)
    assert torch.equal(out.masks, _crop_by_hand(sample, out, 100, 40))


def _crop_by_hand(before, out, left, top):
    """The masks of the targets whose (shifted, clipped) box survived, sliced by hand."""
    height, width = out.meta.img_shape
    rows = []
    for box, mask in zip(before.boxes, before.masks):
        b = (box - torch.tensor([left, top, left, top])).clamp(min=0)
        b = torch.minimum(b, torch.tensor([width, height, width, height]))
        if b[2] > b[0] and b[3] > b[1]:
            rows.append(mask[top : top + height, left : left + width])
    return torch.stack(rows)


def test_min_iou_crop_keeps_masks_on_boxes(sample):
    out = crop_to_patch(sample, torch.tensor([30.0, 20.0, 250.0, 200.0]))
    assert 0 < len(out.boxes) < len(sample.boxes)
    _assert_cropped(sample, out, 30, 20)


def test_expand_moves_masks_with_boxes(sample):
    out = expand_sample(sample, 2.0, left=37, top=11, mean=(0, 0, 0))
    _assert_aligned(out, tol=0.0)
    assert out.masks.shape[1:] == (512, 640)
    assert torch.equal(out.masks[:, 11 : 11 + 256, 37 : 37 + 320], sample.masks)


def test_pad_leaves_masks_on_the_unpadded_grid(sample):
    resized = resize_sample(sample, (300, 400))
    out = build(PadConfig(size_divisor=32))(resized, torch.Generator())
    assert out.meta.pad_shape == (320, 416) and out.image.shape[1:] == (320, 416)
    assert torch.equal(out.masks, resized.masks)
    _assert_aligned(out)


def test_random_expand_keeps_alignment(sample):
    transform = build(ExpandConfig(prob=1.0))
    for seed in range(5):
        _assert_aligned(transform(sample, torch.Generator().manual_seed(seed)), tol=0.0)


@pytest.mark.parametrize(
    "cfg",
    [RandomCropConfig(crop_size=(0.6, 0.6), crop_type="relative"), MinIoURandomCropConfig()],
)
def test_random_crops_keep_alignment(sample, cfg):
    transform = build(cfg)
    for seed in range(5):
        out = transform(sample, torch.Generator().manual_seed(seed))
        # recover the window from the image: the crop is a slice of the input image
        height, width = out.meta.img_shape
        found = [
            (x, y)
            for y in range(sample.meta.img_shape[0] - height + 1)
            for x in range(sample.meta.img_shape[1] - width + 1)
            if torch.equal(
                sample.image[:, y : y + height, x : x + width][:, :2, :2], out.image[:, :2, :2]
            )
            and torch.equal(sample.image[:, y : y + height, x : x + width], out.image)
        ]
        assert found, seed
        _assert_cropped(sample, out, *found[0])


def test_full_train_pipeline_and_collate_keep_masks():
    ds = build(nuclei_dataset_config("train"))
    samples = [ds.get(i, epoch=1) for i in (0, 50)]
    batch = collate(samples)
    assert batch.masks is not None and len(batch.masks) == 2
    for i, s in enumerate(samples):
        m = batch.masks[i]
        assert m.dtype == torch.bool
        assert m.shape == (int(batch.box_mask[i].sum()), *s.meta.img_shape)
        err = (masks_to_boxes(m) - batch.boxes[i, : len(m)]).abs().max()
        assert err <= 1.0
    moved = batch.to("cpu")
    assert all(torch.equal(a, b) for a, b in zip(moved.masks, batch.masks))


def test_collate_rejects_masks_that_do_not_match_their_boxes(sample):
    bad = dataclasses.replace(sample, masks=sample.masks[:-1])
    with pytest.raises(ValueError, match="do not match"):
        collate([bad])
    with pytest.raises(ValueError, match="some samples have masks"):
        collate([sample, dataclasses.replace(sample, masks=None)])


def test_with_mask_round_trips_through_json():
    cfg = nuclei_dataset_config("val")
    from detfn.config import from_dict, to_dict

    back = from_dict(json.loads(json.dumps(to_dict(cfg))), CocoDatasetConfig)
    assert back == cfg and back.with_mask
    assert resolve_path(cfg.ann_file).is_file()


def test_load_image_keeps_masks(sample):
    again = load_image(dataclasses.replace(sample, image=torch.empty((3, 0, 0))))
    assert torch.equal(again.masks, sample.masks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_aligned(again)


def test_nuclei_ships_inside_the_package_with_its_provenance():
    from detfn.data import bundled_root

    root = bundled_root("dsb2018_nuclei")
    assert (root / "PROVENANCE.md").is_file() and (root / "UPSTREAM_README.rst").is_file()
    assert len(list(root.glob("stage1_train/*/images/*.png"))) == 80
    assert not list(root.glob("stage1_train/*/masks"))  # the json files hold the masks
