"""The dataset browser writes PNGs with the boxes drawn; the benchmark prints its table."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from detfn.config import to_dict
from detfn.data import (
    LoadImageConfig,
    RepeatDatasetConfig,
    ResizeConfig,
    bccd_dataset_config,
)
from experiments import benchmark_loader, browse_dataset


def test_browse_writes_pngs_of_the_train_pipeline(tmp_path):
    paths = browse_dataset.main(browse_dataset.BrowseArgs(out_dir=tmp_path, num=2, split="train"))
    assert [p.name for p in paths] == ["0000_BloodImage_00001.png", "0001_BloodImage_00003.png"]
    image = torch.from_numpy(np.array(Image.open(paths[0]).convert("RGB"))).permute(2, 0, 1)
    assert tuple(image.shape) == (3, 800, 1088)  # 480x640 resized to 800x1067, padded to 32
    # the drawn box colour of WBC (label 1, '#3cb44b') appears on the picture
    green = (image[0] == 0x3C) & (image[1] == 0xB4) & (image[2] == 0x4B)
    assert green.sum() > 100


def test_browse_reads_a_dataset_config_json(tmp_path):
    cfg = RepeatDatasetConfig(
        dataset=bccd_dataset_config(
            "val", pipeline=(LoadImageConfig(), ResizeConfig(scale=((64, 48),)))
        ),
        times=2,
    )
    path = tmp_path / "ds.json"
    data = to_dict(cfg)
    data["type"] = "RepeatDataset"
    path.write_text(json.dumps(data))
    args = browse_dataset.BrowseArgs(out_dir=tmp_path / "out", num=1, dataset_config=path)
    (png,) = browse_dataset.main(args)
    assert Image.open(png).size == (64, 48)


def test_benchmark_prints_a_table(capsys):
    torch_threads = torch.get_num_threads()
    args = benchmark_loader.BenchmarkArgs(batches=1, workers=(0,), train_steps=1)
    rows = benchmark_loader.main(args)
    torch.set_num_threads(torch_threads)
    assert [(w, n) for w, n, _ in rows] == [(0, 2)]
    printed = capsys.readouterr().out
    assert "images/s" in printed
    assert "training step (faster_rcnn, 1 torch thread(s)): median" in printed
