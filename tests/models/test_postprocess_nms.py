"""multiclass_nms (one batched call) equals a per-image, per-class torchvision.ops.nms loop;
rescale_detections maps back to original pixels."""

import pytest
import torch
from torchvision.ops import nms

from detfn.models.postprocess import Detections, multiclass_nms, rescale_detections
from detfn.structures import ImageMeta


def _random_case(seed: int, batch: int = 3, num: int = 60, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num, classes, 2, generator=gen) * 50
    wh = torch.rand(batch, num, classes, 2, generator=gen) * 30 + 2
    boxes = torch.cat([xy, xy + wh], dim=-1)  # [B, N, C, 4]
    scores = torch.rand(batch, num, classes, generator=gen)
    mask = torch.rand(batch, num, generator=gen) > 0.2
    return boxes, scores, mask


def _reference(boxes, scores, mask, score_thr, iou, max_per_img):
    """mmdetection's multiclass_nms, one image and one class at a time."""
    out = []
    for b in range(boxes.shape[0]):
        kept = []
        for c in range(scores.shape[2]):
            sel = mask[b] & (scores[b, :, c] > score_thr)
            bx, sc = boxes[b, sel, c], scores[b, sel, c]
            keep = nms(bx, sc, iou)
            kept += [(sc[k].item(), c, bx[k]) for k in keep]
        kept.sort(key=lambda t: -t[0])
        out.append(kept[:max_per_img])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_equals_per_image_per_class_loop(seed):
    boxes, scores, mask = _random_case(seed)
    dets = multiclass_nms(boxes, scores, mask, score_thr=0.3, iou_threshold=0.5, max_per_img=20)
    ref = _reference(boxes, scores, mask, 0.3, 0.5, 20)
    assert dets.boxes.shape == (3, 20, 4)
    for b, kept in enumerate(ref):
        n = len(kept)
        assert dets.mask[b].sum().item() == n
        assert dets.mask[b, :n].all()
        assert torch.equal(dets.scores[b, :n], torch.tensor([t[0] for t in kept]))
        assert dets.labels[b, :n].tolist() == [t[1] for t in kept]
        assert torch.equal(dets.boxes[b, :n], torch.stack([t[2] for t in kept]))
        assert (dets.labels[b, n:] == -1).all() and (dets.scores[b, n:] == 0).all()


def test_shared_boxes_threshold_and_max_per_img():
    # Two identical boxes, two classes: NMS is per class, so both classes survive once each.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]])  # [1, 3, 4]
    scores = torch.tensor([[[0.9, 0.6], [0.8, 0.05], [0.04, 0.7]]])  # [1, 3, 2]
    mask = torch.ones(1, 3, dtype=torch.bool)
    dets = multiclass_nms(boxes, scores, mask, score_thr=0.05, iou_threshold=0.5, max_per_img=2)
    # candidates > 0.05: (0,c0,.9) (0,c1,.6) (1,c0,.8 suppressed by .9) (2,c1,.7); 0.05 is not > 0.05
    assert dets.scores.tolist() == [[pytest.approx(0.9), pytest.approx(0.7)]]
    assert dets.labels.tolist() == [[0, 1]]
    assert dets.boxes[0, 1].tolist() == [50, 50, 60, 60]


def test_no_candidates_gives_all_padding():
    boxes, scores, mask = _random_case(2, batch=2)
    dets = multiclass_nms(boxes, scores, torch.zeros_like(mask), max_per_img=5)
    assert not dets.mask.any() and (dets.labels == -1).all()


def test_bad_shapes_raise_one_line_errors():
    boxes, scores, mask = _random_case(3)
    with pytest.raises(ValueError, match="boxes must be"):
        multiclass_nms(boxes[..., :3], scores, mask)
    with pytest.raises(ValueError, match="mask must be bool"):
        multiclass_nms(boxes, scores, mask.float())


def _meta(flip=False, direction=None):
    return ImageMeta(
        file_name="a.jpg",
        image_id=1,
        ori_shape=(100, 200),
        img_shape=(50, 100),
        pad_shape=(64, 128),
        scale_factor=(0.5, 0.5, 0.5, 0.5),
        flip=flip,
        flip_direction=direction,
    )


def _dets_of(boxes):
    n = boxes.shape[0]
    return Detections(
        boxes[None],
        torch.linspace(0.9, 0.5, n)[None],
        torch.arange(n)[None],
        torch.ones(1, n, dtype=torch.bool),
    )


def test_rescale_divides_by_scale_factor_and_clips_to_ori_shape():
    boxes = torch.tensor([[10.0, 5, 20, 25], [90, 40, 100, 50]])
    dets = Detections(
        torch.cat([boxes, torch.zeros(1, 4)])[None],
        torch.tensor([[0.9, 0.8, 0.0]]),
        torch.tensor([[3, 1, -1]]),
        torch.tensor([[True, True, False]]),
    )
    (out,) = rescale_detections(dets, [_meta()])
    assert out.boxes.tolist() == [[20, 10, 40, 50], [180, 80, 200, 100]]
    assert out.labels.tolist() == [3, 1]
    # a box past the resized border is clipped to the original size
    (out,) = rescale_detections(_dets_of(torch.tensor([[95.0, 45, 120, 70]])), [_meta()])
    assert out.boxes.tolist() == [[190, 90, 200, 100]]


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("horizontal", [[160, 10, 180, 50]]),  # x: 100 - 20 = 80, 100 - 10 = 90, then * 2
        ("vertical", [[20, 50, 40, 90]]),  # y: 50 - 25 = 25, 50 - 5 = 45, then * 2
        ("diagonal", [[160, 50, 180, 90]]),
    ],
)
def test_rescale_undoes_flip(direction, expected):
    dets = _dets_of(torch.tensor([[10.0, 5, 20, 25]]))
    (out,) = rescale_detections(dets, [_meta(True, direction)])
    assert out.boxes.tolist() == expected


def test_rescale_checks_meta_count():
    with pytest.raises(ValueError, match="2 metas for a batch of 1"):
        rescale_detections(_dets_of(torch.zeros(1, 4)), [_meta(), _meta()])
