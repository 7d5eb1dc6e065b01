"""draw_detections draws only boxes above the threshold; save_png writes a readable PNG."""

import pytest
import torch
from torchvision.io import read_image

from detfn.visualization import class_color, draw_detections, save_png


def _image() -> torch.Tensor:
    return torch.full((3, 60, 80), 40, dtype=torch.uint8)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:torchvision.io")
def test_png_pixels_change_on_the_box_outline_only(tmp_path):
    boxes = torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 40.0, 70.0, 55.0]])
    labels = torch.tensor([1, 0])
    scores = torch.tensor([0.9, 0.1])  # the second box is under score_thr and not drawn
    drawn = draw_detections(_image(), boxes, labels, scores, ["cat", "dog"], score_thr=0.3, width=1)
    path = save_png(drawn, tmp_path / "out" / "det.png")
    back = read_image(str(path))
    assert torch.equal(back, drawn)
    # right edge x=40 at y=20 has the class-1 colour; the box interior far from text is untouched
    assert tuple(back[:, 20, 40].tolist()) == class_color(1)
    assert tuple(back[:, 25, 25].tolist()) == (40, 40, 40)
    # nothing drawn for the low-score box
    assert (back[:, 38:58, 48:72] == 40).all()
    assert (_image() == 40).all()  # input unchanged


def test_nothing_above_threshold_returns_a_copy():
    image = _image()
    out = draw_detections(image, torch.zeros(1, 4), torch.tensor([0]), torch.tensor([0.2]), ["a"])
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()


def test_bad_inputs():
    with pytest.raises(ValueError, match="image must be uint8"):
        draw_detections(_image().float(), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), [])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\)"):
        draw_detections(_image(), torch.zeros(1, 4), torch.tensor([3]), torch.tensor([0.9]), ["a"])
    with pytest.raises(ValueError, match="save_png: image must be uint8"):
        save_png(torch.zeros(3, 4, 4), "x.png")
