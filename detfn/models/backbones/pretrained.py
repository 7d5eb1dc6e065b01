"""Loading a torchvision-format ImageNet state dict into a backbone, reporting every mismatch.

mmdetection loads ``torchvision://resnet50`` non-strictly and prints the keys that did not match.
detfn does the same from a local file (``pretrained=path``): matching tensors are copied, the rest
is listed by name in a :class:`LoadReport`; a file in which nothing matches is an error, since it
is almost certainly the wrong file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "load_pretrained", "log_load_report", "read_state_dict"]

logger = logging.getLogger(__name__)

# Wrappers used by common checkpoint formats around the tensors themselves.
_WRAPPER_KEYS = ("state_dict", "model")


class LoadReport(NamedTuple):
    """What :func:`load_pretrained` did, key by key (state-dict names)."""

    path: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]  # in the model, not in the file: kept at their initial values
    unexpected: tuple[str, ...]  # in the file, not in the model: ignored
    shape_mismatch: tuple[str, ...]  # "key: file (a, b) vs model (c, d)": not loaded
    ignored: tuple[str, ...]  # dropped on purpose, e.g. the classifier ``fc.*``

    @property
    def is_clean(self) -> bool:
        """True when every model tensor was loaded and every file tensor used or ignored."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        """One line per kind of mismatch, naming the keys."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        for title, keys in (
            ("missing in file", self.missing),
            ("unexpected in file", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
        ):
            if keys:
                lines.append(f"{title} ({len(keys)}): {', '.join(keys)}")
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike[str], field: str = "pretrained") -> dict[str, Tensor]:
    """The tensors of a ``torch.save``-d state dict, read with ``weights_only=True``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        FileNotFoundError: no such file (one line naming ``field`` and the path).
        ValueError: the file is not a state dict of tensors.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{field}: no such file {str(file)!r}")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ValueError(
            f"{field}: cannot read {str(file)!r} as a state dict: {first_line}"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{field}: {str(file)!r} is not a state dict of tensors")
    return dict(data)


def load_pretrained(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    ignore_prefixes: tuple[str, ...] = (),
    field: str = "pretrained",
) -> LoadReport:
    """Copy the tensors of ``path`` whose names and shapes match ``module``'s state dict.

    Args:
        module: the backbone; its state-dict names follow torchvision's.
        path: a file written by ``torch.save(model.state_dict(), path)``.
        ignore_prefixes: file keys to drop silently, e.g. ``("fc.",)`` for the classifier.
        field: the config field named in error messages.

    Returns:
        LoadReport: loaded, missing, unexpected and shape-mismatched keys.

    Raises:
        ValueError: not a single tensor of the file matches the module.
    """
    source = read_state_dict(path, field)
    target = module.state_dict()
    ignored = tuple(k for k in source if k.startswith(ignore_prefixes))
    # BN's step counter is not a weight; FrozenBN and GN have none, so do not report it.
    candidates = {
        k: v
        for k, v in source.items()
        if k not in ignored and (k in target or not k.endswith("num_batches_tracked"))
    }
    loadable = {k: v for k, v in candidates.items() if k in target and v.shape == target[k].shape}
    if not loadable:
        file_keys = ", ".join(list(candidates)[:3]) or "none"
        model_keys = ", ".join(list(target)[:3])
        raise ValueError(
            f"{field}: no tensor of {str(path)!r} matches the model (file keys: {file_keys}; "
            f"model keys: {model_keys}); expected a torchvision-format state dict"
        )
    module.load_state_dict(loadable, strict=False)
    return LoadReport(
        path=str(path),
        loaded=tuple(loadable),
        missing=tuple(k for k in target if k not in candidates),
        unexpected=tuple(k for k in candidates if k not in target),
        shape_mismatch=tuple(
            f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
            for k, v in candidates.items()
            if k in target and v.shape != target[k].shape
        ),
        ignored=ignored,
    )


def log_load_report(report: LoadReport, name: str) -> None:
    """Log the report: info when clean, a warning naming the mismatched keys otherwise."""
    if report.is_clean:
        logger.info("%s: %s", name, report.summary())
    else:
        logger.warning("%s: %s", name, report.summary())
