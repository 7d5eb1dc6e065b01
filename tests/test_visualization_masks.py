"""Masks are drawn as translucent fills in the class colour, only for boxes above the threshold."""

import numpy as np
import pytest
import torch
from PIL import Image

from detfn.visualization import class_color, draw_detections, draw_masks
from experiments import browse_dataset


def test_mask_pixels_are_blended_with_the_class_colour():
    image = torch.full((3, 60, 80), 40, dtype=torch.uint8)
    masks = torch.zeros((2, 60, 80), dtype=torch.bool)
    masks[0, 12:28, 12:38] = True
    masks[1, 42:52, 52:68] = True
    boxes = torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 40.0, 70.0, 55.0]])
    drawn = draw_detections(
        image,
        boxes,
        torch.tensor([1, 0]),
        torch.tensor([0.9, 0.1]),
        ["a", "b"],
        masks=masks,
        mask_alpha=0.5,
    )
    expected = [round(0.5 * 40 + 0.5 * c) for c in class_color(1)]
    assert drawn[:, 25, 35].tolist() == expected  # inside mask 0, away from caption and outline
    assert drawn[:, 5, 5].tolist() == [40, 40, 40]  # outside every mask
    assert (drawn[:, 42:52, 52:68] == 40).all()  # the low-score detection's mask is not drawn
    with pytest.raises(ValueError, match="1 masks for 2 boxes"):
        draw_detections(
            image, boxes, torch.tensor([1, 0]), torch.ones(2), ["a", "b"], masks=masks[:1]
        )


def test_overlapping_masks_mix_their_colours():
    image = torch.zeros((3, 4, 4), dtype=torch.uint8)
    masks = torch.ones((2, 4, 4), dtype=torch.bool)
    out = draw_masks(image, masks, [(200, 0, 0), (0, 200, 0)], alpha=0.5)
    assert out[:, 0, 0].tolist() == [50, 100, 0]  # (0 -> 100, 0, 0) then halfway to green
    with pytest.raises(ValueError, match="one colour per mask"):
        draw_masks(image, masks, [(1, 2, 3)])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_browse_dataset_draws_ground_truth_masks(tmp_path):
    args = browse_dataset.BrowseArgs(out_dir=tmp_path, num=1, split="val", dataset="nuclei")
    (path,) = browse_dataset.main(args)
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert tuple(image.shape) == (3, 512, 512)
    # class 0's colour '#e6194b' blended at 0.5 into the (dark, fluorescence) nuclei pixels:
    # the red channel rises well above green and blue inside the masks.
    reddish = (image[0].int() - image[1].int() > 60) & (image[0].int() - image[2].int() > 40)
    assert reddish.sum() > 2000
    plain = browse_dataset.main(
        browse_dataset.BrowseArgs(out_dir=tmp_path / "bccd", num=1, split="val")
    )
    assert plain
