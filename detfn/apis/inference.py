"""Inference as plain functions: load a detector, run it on images of any sizes, draw results.

detector = load_detector("work_dirs/run/config.json", "work_dirs/run/latest.pth")
[dets] = inference_detector(detector, ["blood.jpg"])        # boxes in original pixels
save_drawing(detector, "blood.jpg", dets, "blood_pred.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detfn.apis.experiment import ExperimentConfig
from detfn.apis.train import resolve_device
from detfn.apis.weights_fit import fit_weights
from detfn.config import load
from detfn.data import Sample, collate
from detfn.data.transforms.loading import LoadImageConfig, read_rgb
from detfn.engine.checkpoint_io import load_weights
from detfn.models.functional import detector_predict_fn, split
from detfn.registry import build
from detfn.structures import ImageDetections, ImageMeta
from detfn.visualization import draw_detections, save_png

__all__ = ["Detector", "inference_detector", "load_detector", "save_drawing", "test_pipeline_of"]

ImageInput = str | os.PathLike[str] | torch.Tensor


@dataclass(frozen=True)
class Detector:
    """A built detector with its weights, the test pipeline and the class names."""

    cfg: ExperimentConfig
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    pipeline: tuple[Any, ...]
    class_names: tuple[str, ...]
    device: torch.device


def test_pipeline_of(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """The test pipeline of the config's test (else val) dataset, without its image loading."""
    dataset = cfg.data.test or cfg.data.val
    if dataset is None or not getattr(dataset, "pipeline", None):
        raise ValueError("the config names no data.test or data.val dataset with a pipeline")
    return tuple(t for t in dataset.pipeline if not isinstance(t, LoadImageConfig))


def load_detector(
    config: str | os.PathLike[str] | ExperimentConfig,
    checkpoint: str | os.PathLike[str] | None,
    device: str = "auto",
) -> Detector:
    """Build the detector of a saved config (or a config value) and load checkpoint weights."""
    cfg = config if isinstance(config, ExperimentConfig) else load(config, ExperimentConfig)
    target = resolve_device(device)
    model = build(cfg.model).to(target)
    params, buffers = split(model)
    if checkpoint is not None:
        ckpt_params, ckpt_buffers = load_weights(str(checkpoint))
        given = {**ckpt_params, **ckpt_buffers}
        params, buffers = fit_weights(params, buffers, given, str(checkpoint), target)
    names = cfg.model.class_names  # saved with the model by training
    if names is None:
        names = getattr(cfg.data.test or cfg.data.val or cfg.data.train, "classes", None)
    names = tuple(names) if names else tuple(str(i) for i in range(cfg.model.num_classes))
    return Detector(cfg, model, params, buffers, test_pipeline_of(cfg), names, target)


def _as_sample(image: ImageInput, index: int) -> Sample:
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"image {index}: expected a uint8 tensor [3, H, W], got {image.dtype} "
                f"{tuple(image.shape)}"
            )
        pixels, name = image, f"<tensor {index}>"
    else:
        pixels, name = read_rgb(str(image)), str(image)
    shape = (int(pixels.shape[1]), int(pixels.shape[2]))
    empty = torch.zeros((0, 4))
    meta = ImageMeta(name, index, shape, shape, shape)
    return Sample(pixels, empty, torch.zeros(0, dtype=torch.int64), empty, meta)


def as_image_list(images: Any) -> list[ImageInput]:
    """The images as a list: one path or one ``[3, H, W]`` tensor becomes a list of one.

    Without this a path string is a sequence of characters, read as one image per letter.

    Raises:
        TypeError: anything else, saying what is expected.
    """
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        raise TypeError(
            f"inference_detector: a tensor must be one uint8 image [3, H, W], got shape "
            f"{tuple(images.shape)}; pass a list of images for a batch"
        )
    if isinstance(images, Sequence) and not isinstance(images, (bytes, bytearray)):
        return list(images)
    raise TypeError(
        "inference_detector: expected an image path, a uint8 tensor [3, H, W] or a list of "
        f"them, got {type(images).__name__}"
    )


def inference_detector(
    detector: Detector, images: ImageInput | Sequence[ImageInput], batch_size: int = 2
) -> list[ImageDetections]:
    """Detections per image (boxes xyxy in original pixels, scores, labels; for a mask detector
    ``masks``, ``Tensor[N, H, W]`` bool in the original image), in input order.

    ``images`` is a list of paths / uint8 ``[3, H, W]`` tensors; one path or tensor alone is
    read as a list of one (a list of one result comes back either way).
    """
    images = as_image_list(images)
    transforms = [build(t) for t in detector.pipeline]
    predict = detector_predict_fn(detector.model)
    generator = torch.Generator().manual_seed(0)
    results: list[ImageDetections] = []
    for start in range(0, len(images), batch_size):
        samples = []
        for i, image in enumerate(images[start : start + batch_size], start):
            sample = _as_sample(image, i)
            for transform in transforms:
                sample = transform(sample, generator)
            samples.append(sample)
        batch = collate(samples)
        pixels = batch.images.to(detector.device)
        dets = predict(detector.params, detector.buffers, pixels, batch.metas)
        results.extend(d.to("cpu") for d in dets)
    return results


def save_drawing(
    detector: Detector,
    image: ImageInput,
    detections: ImageDetections,
    path: str | os.PathLike[str],
    score_thr: float = 0.3,
) -> Path:
    """Draw ``detections`` on ``image`` (original size), masks as translucent fills, and write
    a PNG."""
    pixels = _as_sample(image, 0).image
    drawn = draw_detections(
        pixels,
        detections.boxes,
        detections.labels,
        detections.scores,
        detector.class_names,
        score_thr=score_thr,
        masks=detections.masks,
    )
    return save_png(drawn, path)
