"""Figures without a display: every analysis tool draws on a bare ``matplotlib.figure.Figure``.

``pyplot`` is never imported, so no GUI backend is chosen and no global figure state is kept:
``Figure.savefig`` renders through the Agg canvas, which works on a headless machine and in a
training process alike. The caller's own matplotlib backend (e.g. in a notebook) is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure"]


def new_figure(width: float = 6.4, height: float = 4.8, dpi: int = 100) -> Figure:
    """A figure attached to the Agg canvas (inches and dots per inch as in matplotlib)."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``figure`` as a PNG (parent folders created); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are written as PNG; give a path ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
