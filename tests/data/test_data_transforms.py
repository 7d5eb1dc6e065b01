"""Box geometry of every transform, checked against the pixels the boxes sit on."""

from __future__ import annotations

import colorsys
import dataclasses

import pytest
import torch
from torchvision.ops import box_iou

from detfn.data import (
    ExpandConfig,
    MinIoURandomCropConfig,
    NormalizeConfig,
    PadConfig,
    PhotoMetricDistortionConfig,
    RandomCropConfig,
    RandomFlipConfig,
    ResizeConfig,
    Sample,
    crop_sample,
    expand_sample,
    flip_sample,
    min_iou_crop,
    rescale_size,
    resize_sample,
)
from detfn.data.transforms.photometric import hsv_to_rgb, rgb_to_hsv
from detfn.registry import build
from detfn.structures import ImageMeta


def coord_sample(height: int = 60, width: int = 100) -> Sample:
    """An image whose pixel (y, x) holds (x, y, 7): a crop or flip can be read off its pixels."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack((xs, ys, torch.full_like(xs, 7))).to(torch.uint8)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [50.0, 20.0, 95.0, 58.0], [0.0, 0.0, 8.0, 6.0]])
    meta = ImageMeta("synthetic.png", 1, (height, width), (height, width), (height, width))
    return Sample(
        image, boxes, torch.tensor([0, 1, 2]), torch.tensor([[60.0, 0.0, 70.0, 10.0]]), meta
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_twice_is_identity(direction):
    sample = coord_sample()
    once = flip_sample(sample, direction)
    twice = flip_sample(once, direction)
    assert torch.equal(twice.image, sample.image)
    assert torch.equal(twice.boxes, sample.boxes)
    assert torch.equal(twice.ignore_boxes, sample.ignore_boxes)
    assert once.meta.flip and once.meta.flip_direction == direction
    assert not twice.meta.flip and twice.meta.flip_direction is None


def test_horizontal_flip_moves_box_with_its_pixels():
    sample = coord_sample()
    flipped = flip_sample(sample, "horizontal")
    # hand-computed: x -> 100 - x
    assert flipped.boxes[0].tolist() == [70.0, 5.0, 90.0, 25.0]
    assert flipped.ignore_boxes[0].tolist() == [30.0, 0.0, 40.0, 10.0]
    x1, y1, x2, y2 = (int(v) for v in flipped.boxes[0])
    ox1, oy1, ox2, oy2 = (int(v) for v in sample.boxes[0])
    region = flipped.image[:, y1:y2, x1:x2]
    original = sample.image[:, oy1:oy2, ox1:ox2].flip(-1)
    assert torch.equal(region, original)


def test_horizontal_then_vertical_reads_as_diagonal():
    sample = flip_sample(flip_sample(coord_sample(), "horizontal"), "vertical")
    assert sample.meta.flip_direction == "diagonal"
    assert torch.equal(sample.image, flip_sample(coord_sample(), "diagonal").image)


def test_random_flip_probability_and_directions():
    fn = build(RandomFlipConfig(prob=1.0, direction=("horizontal", "vertical")))
    seen = {fn(coord_sample(10, 12), gen(s)).meta.flip_direction for s in range(40)}
    assert seen == {"horizontal", "vertical"}
    never = build(RandomFlipConfig(prob=0.0))
    assert all(not never(coord_sample(10, 12), gen(s)).meta.flip for s in range(20))


def test_rescale_size_matches_mmcv_rule():
    # 480x640 into (1333, 800): factor min(1333/640, 800/480) = 5/3 -> 800 x 1066.67 -> 1067
    assert rescale_size(480, 640, (1333, 800)) == (800, 1067)
    # portrait 640x427 into (1333, 800): min(1333/640, 800/427) = 1.8735 -> 1199 x 800
    assert rescale_size(640, 427, (1333, 800)) == (1199, 800)


def test_resize_maps_back_through_scale_factor():
    sample = coord_sample(60, 100)
    out = build(ResizeConfig(scale=((1333, 800),)))(sample, gen())
    # factor min(1333 / 100, 800 / 60) = 13.33 -> 800 x 1333
    assert out.meta.img_shape == (800, 1333)
    assert tuple(out.image.shape) == (3, 800, 1333)
    factor = torch.tensor(out.meta.scale_factor)
    assert factor.tolist() == pytest.approx([13.33, 800 / 60, 13.33, 800 / 60])
    assert torch.allclose(out.boxes / factor, sample.boxes, atol=1e-4)
    twice = resize_sample(out, (24, 32))
    assert torch.allclose(
        twice.boxes / torch.tensor(twice.meta.scale_factor), sample.boxes, atol=1e-4
    )


def test_resize_without_keep_ratio_and_clipping():
    sample = dataclasses.replace(coord_sample(), boxes=torch.tensor([[90.0, 50.0, 120.0, 70.0]]))
    sample = dataclasses.replace(sample, labels=torch.tensor([0]))
    out = build(ResizeConfig(scale=((50, 40),), keep_ratio=False))(sample, gen())
    assert out.meta.img_shape == (40, 50)
    # x: *0.5 -> [45, 60] clipped to 50; y: *2/3 -> [33.3, 46.7] clipped to 40
    assert out.boxes[0].tolist() == pytest.approx([45.0, 100 / 3, 50.0, 40.0])


def test_resize_multiscale_modes_stay_in_range():
    rng = build(ResizeConfig(scale=((100, 40), (100, 60)), multiscale_mode="range"))
    shorts = {rng(coord_sample(50, 100), gen(s)).meta.img_shape[0] for s in range(30)}
    assert min(shorts) >= 40 and max(shorts) <= 60 and len(shorts) > 3
    val = build(ResizeConfig(scale=((100, 40), (100, 60)), multiscale_mode="value"))
    assert {val(coord_sample(50, 100), gen(s)).meta.img_shape for s in range(30)} == {
        (40, 80),
        (50, 100),
    }
    ratio = build(ResizeConfig(scale=((100, 50),), ratio_range=(0.5, 1.0)))
    heights = [ratio(coord_sample(50, 100), gen(s)).meta.img_shape[0] for s in range(20)]
    assert all(24 <= h <= 50 for h in heights) and len(set(heights)) > 3


def test_normalize_and_pad():
    sample = coord_sample(30, 45)
    norm = build(NormalizeConfig())(sample, gen())
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    assert torch.allclose(norm.image, (sample.image.float() - mean) / std)
    bgr = build(NormalizeConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), to_rgb=False))
    assert torch.equal(bgr(sample, gen()).image, sample.image.float().flip(0))
    padded = build(PadConfig(size_divisor=32, pad_value=-1.0))(norm, gen())
    assert tuple(padded.image.shape) == (3, 32, 64) and padded.meta.pad_shape == (32, 64)
    assert torch.equal(padded.image[:, :30, :45], norm.image)
    assert (padded.image[:, 30:, :] == -1).all() and (padded.image[:, :, 45:] == -1).all()
    fixed = build(PadConfig(size=(40, 50), size_divisor=None))(sample, gen())
    assert tuple(fixed.image.shape) == (3, 40, 50)
    with pytest.raises(ValueError, match=r"synthetic.png: Pad: cannot pad a 45x30 image"):
        build(PadConfig(size=(20, 50), size_divisor=None))(sample, gen())


def test_crop_boundaries_by_hand():
    out = crop_sample(coord_sample(), left=20, top=10, height=30, width=40)
    assert out.meta.img_shape == (30, 40)
    assert int(out.image[0, 0, 0]) == 20 and int(out.image[1, 0, 0]) == 10
    # box 0 [10,5,30,25] -> shifted [-10,-5,10,15] -> clipped [0,0,10,15]
    # box 1 [50,20,95,58] -> [30,10,75,48] -> clipped [30,10,40,30]; box 2 leaves the crop
    assert out.boxes.tolist() == [[0.0, 0.0, 10.0, 15.0], [30.0, 10.0, 40.0, 30.0]]
    assert out.labels.tolist() == [0, 1]
    assert out.ignore_boxes.shape == (0, 4)  # [60, 0, 70, 10] lies right of x = 60 (crop end)


def test_random_crop_image_and_boxes_agree():
    sample = coord_sample()
    fn = build(RandomCropConfig(crop_size=(30.0, 40.0)))
    for seed in range(10):
        out = fn(sample, gen(seed))
        left, top = int(out.image[0, 0, 0]), int(out.image[1, 0, 0])
        assert tuple(out.image.shape) == (3, 30, 40)
        assert torch.equal(out.image, sample.image[:, top : top + 30, left : left + 40])
        expected = crop_sample(sample, left, top, 30, 40)
        assert torch.equal(out.boxes, expected.boxes) and len(out.boxes) > 0


def test_min_iou_crop_keeps_iou_constraint():
    sample = coord_sample()
    cfg = MinIoURandomCropConfig(min_crop_size=0.3)
    for seed in range(8):
        out = min_iou_crop(sample, 0.3, cfg, gen(seed))
        if out is None:
            continue
        left, top = int(out.image[0, 0, 0]), int(out.image[1, 0, 0])
        h, w = out.meta.img_shape
        patch = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
        assert box_iou(patch, sample.boxes).min() >= 0.3
        centers = (sample.boxes[:, :2] + sample.boxes[:, 2:]) / 2
        inside = (centers > patch[0, :2]).all(1) & (centers < patch[0, 2:]).all(1)
        assert out.labels.tolist() == sample.labels[inside].tolist()


def test_min_iou_random_crop_pixels_follow_boxes():
    fn = build(MinIoURandomCropConfig())
    sample = coord_sample()
    cropped = 0
    for seed in range(10):
        out = fn(sample, gen(seed))
        cropped += out.meta.img_shape != (60, 100)
        left, top = int(out.image[0, 0, 0]), int(out.image[1, 0, 0])
        shift = torch.tensor([left, top, left, top], dtype=torch.float32)
        h, w = out.meta.img_shape
        assert torch.equal(out.image, sample.image[:, top : top + h, left : left + w])
        for box, label in zip(out.boxes, out.labels):
            original = sample.boxes[label]
            clipped = torch.minimum(
                torch.maximum(original - shift, torch.zeros(4)),
                torch.tensor([w, h, w, h], dtype=torch.float32),
            )
            assert torch.allclose(box, clipped)
    assert cropped > 0


def test_expand_places_image_and_boxes_together():
    sample = dataclasses.replace(coord_sample(), image=coord_sample().image.clamp(min=1))
    out = expand_sample(sample, ratio=2.5, left=30, top=12, mean=(0.0, 0.0, 0.0))
    assert out.meta.img_shape == (150, 250)
    assert torch.equal(out.image[:, 12:72, 30:130], sample.image)
    assert int(out.image.sum()) == int(sample.image.sum())  # the rest is the zero fill
    assert torch.equal(out.boxes, sample.boxes + torch.tensor([30.0, 12.0, 30.0, 12.0]))
    fn = build(ExpandConfig(prob=1.0, ratio_range=(2.0, 3.0), mean=(5.0, 6.0, 7.9)))
    for seed in range(5):
        rand = fn(sample, gen(seed))
        nonfill = (rand.image != torch.tensor([5, 6, 7]).view(3, 1, 1)).any(0)
        ys, xs = torch.nonzero(nonfill, as_tuple=True)
        top, left = int(ys.min()), int(xs.min())
        assert torch.equal(rand.image[:, top : top + 60, left : left + 100], sample.image)
        assert torch.equal(
            rand.boxes - sample.boxes,
            torch.tensor([[left, top, left, top]] * 3, dtype=torch.float32),
        )


def test_hsv_round_trip_matches_colorsys():
    rgb = torch.tensor([[0.2, 0.9, 0.4], [0.7, 0.1, 0.1], [0.3, 0.3, 0.3], [0.1, 0.2, 0.95]])
    image = rgb.T.reshape(3, 2, 2) * 255
    hsv = rgb_to_hsv(image).reshape(3, -1).T
    for (r, g, b), (h, s, v) in zip(rgb.tolist(), hsv.tolist()):
        eh, es, ev = colorsys.rgb_to_hsv(r, g, b)
        assert (h, s, v) == pytest.approx((eh * 360, es, ev * 255), abs=1e-3)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(image)), image, atol=1e-3)


def test_photometric_distortion_is_seeded_and_keeps_boxes():
    fn = build(PhotoMetricDistortionConfig())
    sample = coord_sample()
    a, b = fn(sample, gen(3)), fn(sample, gen(3))
    assert a.image.dtype == torch.float32 and torch.equal(a.image, b.image)
    assert torch.equal(a.boxes, sample.boxes)
    outputs = [fn(sample, gen(s)).image for s in range(6)]
    assert any(not torch.allclose(o, sample.image.float()) for o in outputs)
