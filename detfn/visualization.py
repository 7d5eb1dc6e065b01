"""Draw detections (boxes, captions, instance masks as translucent fills) on an image and save
it as PNG (torchvision.utils / torchvision.io).

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

__all__ = ["class_color", "draw_detections", "draw_masks", "save_png"]


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, well-spread RGB colour per class (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_masks(
    image: Tensor, masks: Tensor, colors: Sequence[tuple[int, int, int]], alpha: float = 0.5
) -> Tensor:
    """Blend each mask's colour into the pixels it covers: ``(1 - alpha) * pixel + alpha *
    colour``, mask after mask, so overlapping masks mix their colours (torchvision's
    ``draw_segmentation_masks`` blacks overlaps out instead, which hides touching instances).

    Args:
        image (Tensor[3, H, W]): uint8 RGB.
        masks (Tensor[N, H, W]): bool, on the image's grid.
        colors: one RGB colour per mask.
        alpha: opacity of the fill (mmdetection's ``show_result`` blends masks at 0.5).

    Returns:
        Tensor[3, H, W] uint8: a new image.
    """
    if masks.dim() != 3 or masks.shape[1:] != image.shape[1:] or len(colors) != masks.shape[0]:
        raise ValueError(
            f"draw_masks: need masks [N, H, W] on the {tuple(image.shape[1:])} image and one "
            f"colour per mask, got {tuple(masks.shape)} and {len(colors)} colours"
        )
    out = image.detach().cpu().to(torch.float32)
    for mask, color in zip(masks.detach().cpu().bool(), colors):
        fill = torch.tensor(color, dtype=torch.float32)[:, None]
        out[:, mask] = out[:, mask] * (1 - alpha) + fill * alpha
    return out.round().clamp(0, 255).to(torch.uint8)


def draw_detections(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor,
    class_names: Sequence[str],
    score_thr: float = 0.3,
    width: int = 2,
    masks: Tensor | None = None,
    mask_alpha: float = 0.5,
) -> Tensor:
    """Draw the boxes scoring at least ``score_thr``, captioned ``name|score``, and their
    instance masks (when given) as translucent fills in the class colour.

    Args:
        image (Tensor[3, H, W]): uint8 RGB, original image coordinates.
        boxes (Tensor[N, 4]): xyxy pixels in that image.
        labels (Tensor[N]): contiguous class indices into ``class_names``.
        scores (Tensor[N]): detection scores.
        class_names: one name per class.
        score_thr: boxes below it are not drawn (mmdetection's ``show_score_thr`` default 0.3).
        width: line width in pixels.
        masks (Tensor[N, H, W] | None): bool instance masks in the image
            (``ImageDetections.masks``).
        mask_alpha: opacity of the mask fills.

    Returns:
        Tensor[3, H, W] uint8: a new image; the input is unchanged.
    """
    _check_drawing_inputs(image, boxes, labels, scores, class_names)
    if masks is not None and masks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"draw_detections: {masks.shape[0]} masks for {boxes.shape[0]} boxes; need one each"
        )
    keep = scores.detach().cpu() >= score_thr
    boxes = boxes.detach().cpu().float()[keep]
    labels_kept = labels.detach().cpu()[keep].tolist()
    scores_kept = scores.detach().cpu()[keep].tolist()
    if not labels_kept:
        return image.detach().cpu().clone()
    captions = [f"{class_names[c]}|{s:.2f}" for c, s in zip(labels_kept, scores_kept)]
    colors = [class_color(c) for c in labels_kept]
    image = image.detach().cpu()
    if masks is not None:
        image = draw_masks(image, masks.detach().cpu()[keep], colors, mask_alpha)
    return draw_bounding_boxes(image, boxes, captions, colors=colors, width=width)


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
