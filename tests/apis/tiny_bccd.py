"""The 8-image BCCD subset as the train, val and test sets of a preset (shared by e2e tests)."""

from __future__ import annotations

from pathlib import Path

from detfn.data import default_test_pipeline, default_train_pipeline

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"


def tiny_data_updates(scale: tuple[int, int]) -> dict:
    """``override`` updates pointing every split at the tiny set, resized to ``scale``."""
    updates: dict = {"data.train_loader.num_workers": 0, "data.test_loader.num_workers": 0}
    for split in ("train", "val", "test"):
        updates[f"data.{split}.ann_file"] = str(TINY / "instances.json")
        updates[f"data.{split}.img_prefix"] = str(TINY / "JPEGImages")
    updates["data.train.pipeline"] = default_train_pipeline(scale=scale)
    updates["data.val.pipeline"] = default_test_pipeline(scale=scale)
    updates["data.test.pipeline"] = default_test_pipeline(scale=scale)
    return updates
