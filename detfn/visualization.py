"""Draw detections on an image and save it as PNG (torchvision.utils / torchvision.io).

Drawing is pure (tensor in, new tensor out); only :func:`save_png` touches the file system.
"""

from __future__ import annotations

import colorsys
import os
import pathlib
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes

__all__ = ["class_color", "draw_detections", "save_png"]


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, well-spread RGB colour per class (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor,
    class_names: Sequence[str],
    score_thr: float = 0.3,
    width: int = 2,
) -> Tensor:
    """Draw the boxes scoring at least ``score_thr``, captioned ``name|score``.

    Args:
        image (Tensor[3, H, W]): uint8 RGB, original image coordinates.
        boxes (Tensor[N, 4]): xyxy pixels in that image.
        labels (Tensor[N]): contiguous class indices into ``class_names``.
        scores (Tensor[N]): detection scores.
        class_names: one name per class.
        score_thr: boxes below it are not drawn (mmdetection's ``show_score_thr`` default 0.3).
        width: line width in pixels.

    Returns:
        Tensor[3, H, W] uint8: a new image; the input is unchanged.
    """
    _check_drawing_inputs(image, boxes, labels, scores, class_names)
    keep = scores.detach().cpu() >= score_thr
    boxes = boxes.detach().cpu().float()[keep]
    labels_kept = labels.detach().cpu()[keep].tolist()
    scores_kept = scores.detach().cpu()[keep].tolist()
    if not labels_kept:
        return image.detach().cpu().clone()
    captions = [f"{class_names[c]}|{s:.2f}" for c, s in zip(labels_kept, scores_kept)]
    colors = [class_color(c) for c in labels_kept]
    return draw_bounding_boxes(image.detach().cpu(), boxes, captions, colors=colors, width=width)


def _check_drawing_inputs(
    image: Tensor, boxes: Tensor, labels: Tensor, scores: Tensor, class_names: Sequence[str]
) -> None:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"draw_detections: image must be uint8 [3, H, W], got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    n = boxes.shape[0] if boxes.dim() == 2 else -1
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (n,) or scores.shape != (n,):
        raise ValueError(
            f"draw_detections: need boxes [N, 4], labels [N], scores [N], got "
            f"{tuple(boxes.shape)}, {tuple(labels.shape)}, {tuple(scores.shape)}"
        )
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
        raise ValueError(
            f"draw_detections: labels must be in [0, {len(class_names)}) for the "
            f"{len(class_names)} class names, got range [{int(labels.min())}, {int(labels.max())}]"
        )


def save_png(image: Tensor, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write a uint8 Tensor[3, H, W] (or [1, H, W]) as a PNG, creating parent folders."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"save_png: image must be uint8 [3, H, W] or [1, H, W], got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its PNG codec in favour of torchcodec; it still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        write_png(image.detach().cpu(), str(path))
    return path
