"""LoadImage: decode the file named by the sample's meta into a uint8 RGB ``[3, H, W]`` tensor."""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass

import torch
from torchvision.io import ImageReadMode, decode_image

from detfn.data.errors import BadImageError
from detfn.data.sample import Sample
from detfn.data.transforms.base import Transform, TransformConfig
from detfn.registry import register

__all__ = ["LoadImageConfig", "load_image", "read_rgb", "to_uint8"]


@dataclass(frozen=True)
class LoadImageConfig(TransformConfig):
    """Decode the image with torchvision.io; grayscale, CMYK and alpha images become RGB.

    Attributes:
        check_shape: raise when the decoded size differs from the size the annotation declares,
            because boxes drawn on another size would be silently wrong.
    """

    check_shape: bool = True


def read_rgb(path: str) -> torch.Tensor:
    """Tensor[3, H, W] uint8 RGB of an image file.

    Raises:
        BadImageError: the file is missing, unreadable or not a decodable image.
    """
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of torchcodec; they still work
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return _read_rgb(path)


def _read_rgb(path: str) -> torch.Tensor:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except OSError as error:
        raise BadImageError(f"{path}: cannot read image file: {error.strerror or error}") from None
    if not raw:
        raise BadImageError(f"{path}: image file is empty")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        raise BadImageError(f"{path}: cannot decode image: {_reason(error)}") from None
    if image.ndim != 3 or image.shape[0] != 3 or image.numel() == 0:
        raise BadImageError(f"{path}: decoded to shape {tuple(image.shape)}, expected [3, H, W]")
    return to_uint8(image, path)


def to_uint8(image: torch.Tensor, path: str) -> torch.Tensor:
    """Tensor[3, H, W] uint8 of a decoded image, 16-bit PNGs scaled down to 8 bits.

    torchvision decodes a 16-bit PNG to uint16 values ``0..65535``; used as they are, every
    later transform (normalization with 8-bit means) would see the image 257x too bright. The
    top byte is kept (``v >> 8``), as OpenCV (mmcv's reader) and torchvision's ``to_dtype`` do,
    so a 16-bit file holding ``v8 * 257`` gives back exactly ``v8``.

    Raises:
        BadImageError: any other sample type, naming its bit depth.
    """
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.uint16:
        return (image.to(torch.int32) >> 8).to(torch.uint8)
    bits = torch.iinfo(image.dtype).bits if not image.dtype.is_floating_point else "float"
    raise BadImageError(f"{path}: unsupported {bits}-bit samples ({image.dtype}); expected 8 or 16")


def _reason(error: Exception) -> str:
    """The message of a torchvision C++ error without its source-location prefix."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^.*?\.cpp:\d+,\s*", "", lines[0])


def load_image(sample: Sample, check_shape: bool = True) -> Sample:
    """The sample with its image decoded and its shapes set from the decoded image."""
    path = sample.meta.file_name
    image = read_rgb(path)
    shape = (int(image.shape[1]), int(image.shape[2]))
    declared = sample.meta.ori_shape
    if check_shape and shape != declared:
        raise BadImageError(
            f"{path}: image is {shape[1]}x{shape[0]} (WxH) but the annotation declares "
            f"{declared[1]}x{declared[0]}"
        )
    meta = dataclasses.replace(sample.meta, ori_shape=shape, img_shape=shape, pad_shape=shape)
    return dataclasses.replace(sample, image=image, meta=meta)


@register(LoadImageConfig)
def build_load_image(cfg: LoadImageConfig) -> Transform:
    def transform(sample: Sample, generator: torch.Generator) -> Sample:
        del generator  # deterministic
        return load_image(sample, cfg.check_shape)

    return transform
