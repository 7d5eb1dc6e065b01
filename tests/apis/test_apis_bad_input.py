"""apis and CLI inputs from issue 16: foreign checkpoints, a path instead of a list, thin images,
and CLI value errors in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detfn.apis import (
    bccd_cpu_preset,
    build_experiment,
    evaluate_dataset,
    inference,
    inference_detector,
)
from detfn.apis.cli_errors import first_line, is_input_error, run_cli
from detfn.apis.inference import Detector, load_detector
from detfn.config import override
from detfn.data import BCCD_CLASSES, CocoDatasetConfig, build_loader
from detfn.data.transforms.presets import default_test_pipeline, default_train_pipeline
from detfn.engine.checkpoint_io import CheckpointError
from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from detfn.registry import build
from experiments.faster_rcnn import main, parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
BCCD8 = ROOT / "tests" / "assets" / "tiny" / "bccd8"
SCALE = (320, 240)


def cpu_preset():
    return dataclasses.replace(bccd_cpu_preset(), device="cpu")


# -- 4. a checkpoint of another architecture ---------------------------------------------------


def test_load_detector_names_tensors_of_another_shape(tmp_path):
    cfg = cpu_preset()
    other = build(override(cfg.model, {"num_classes": 5, "class_names": None}))  # 6 logits, not 4
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_detector(cfg, path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: does not fit the model")
    assert "4 tensor(s) of another shape" in message  # weight and bias of fc_cls and fc_reg
    assert "roi_head.bbox_head.fc_cls.weight: expected (4, 1024), got (6, 1024)" in message
    assert "roi_head.bbox_head.fc_reg.weight: expected (12, 1024), got (20, 1024)" in message


def test_load_detector_names_missing_tensors(tmp_path):
    cfg = cpu_preset()
    weights = build(cfg.model).state_dict()
    del weights["rpn_head.rpn_cls.weight"], weights["neck.lateral_convs.0.weight"]
    path = tmp_path / "partial.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=r"2 missing \(neck\.lateral_convs\.0\.weight, rpn"):
        load_detector(cfg, path, device="cpu")


def test_load_detector_with_its_own_weights_keeps_them(tmp_path):
    cfg = cpu_preset()
    model = build(cfg.model)
    path = tmp_path / "own.pth"
    torch.save(model.state_dict(), path)
    detector = load_detector(cfg, path, device="cpu")
    params, buffers = split(model)
    assert all(torch.equal(detector.params[k], v) for k, v in params.items())
    assert all(torch.equal(detector.buffers[k], v) for k, v in buffers.items())


# -- 8 and 9. one path instead of a list; a 4000x8 image ---------------------------------------


def thin_set(tmp_path: pathlib.Path) -> pathlib.Path:
    """Three images, 4000x8, 8x4000 and 4000x1, each with one box; returns the json."""
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (8, 4000), "tall.png": (4000, 8), "line.png": (1, 4000)}
    images, annotations = [], []
    for i, (name, (h, w)) in enumerate(sizes.items(), start=1):
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        box = [w / 4, 0, w / 8, h] if w > h else [0, h / 4, w, h / 8]
        annotations.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": box, "area": 1.0, "iscrowd": 0}
        )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(BCCD_CLASSES)]
    path = tmp_path / "thin.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def thin_detector(tmp_path: pathlib.Path):
    ann = thin_set(tmp_path)

    def dataset(train: bool) -> CocoDatasetConfig:
        pipeline = default_train_pipeline(scale=SCALE) if train else default_test_pipeline(SCALE)
        return CocoDatasetConfig(
            ann_file=str(ann),
            img_prefix=str(tmp_path),
            classes=BCCD_CLASSES,
            pipeline=pipeline,
            min_size=0,
            test_mode=not train,
        )

    cfg = cpu_preset()
    loaders = {"num_workers": 0, "batch_size": 3, "shuffle": False, "group_by_aspect": False}
    data = dataclasses.replace(
        cfg.data,
        train=dataset(True),
        val=dataset(False),
        test=dataset(False),
        train_loader=dataclasses.replace(cfg.data.train_loader, **loaders),
        test_loader=dataclasses.replace(cfg.data.test_loader, **loaders),
    )
    cfg = dataclasses.replace(cfg, data=data)
    built = build_experiment(cfg)
    detector = Detector(
        cfg,
        built.model,
        built.params,
        built.buffers,
        inference.test_pipeline_of(cfg),
        BCCD_CLASSES,
        "cpu",
    )
    return cfg, built, detector


def test_thin_images_train_predict_and_evaluate(tmp_path):
    torch.manual_seed(0)
    cfg, built, detector = thin_detector(tmp_path)
    batch = next(iter(build_loader(built.train_set, cfg.data.train_loader)))
    # factor min(320 / 4000, 240 / 8) = 0.08: 8 rows become 0.64, rounded up to 1; 1 row stays 1
    assert [m.img_shape for m in batch.metas] == [(1, 320), (320, 1), (1, 320)]
    loss = detector_loss_fn(built.model)(built.params, built.buffers, batch)
    total = loss[0] if isinstance(loss, tuple) else loss
    assert torch.isfinite(total)

    dets = inference_detector(detector, [tmp_path / "wide.png", tmp_path / "tall.png"])
    for det, (h, w) in zip(dets, [(8, 4000), (4000, 8)]):
        assert len(det.boxes) > 0
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 2] <= w).all()
        assert (det.boxes[:, 1] >= 0).all() and (det.boxes[:, 3] <= h).all()

    metrics = evaluate_dataset(
        detector_predict_fn(built.model),
        built.params,
        built.buffers,
        built.val_set,
        build_loader(built.val_set, cfg.data.test_loader),
        class_names=built.val_set.class_names,
    )
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0


def test_inference_detector_takes_one_path_or_tensor(tmp_path):
    torch.manual_seed(0)
    _, _, detector = thin_detector(tmp_path)
    image = BCCD8 / "JPEGImages" / "BloodImage_00001.jpg"
    [from_list] = inference_detector(detector, [str(image)])
    for single in (str(image), image):
        [det] = inference_detector(detector, single)
        assert torch.equal(det.boxes, from_list.boxes) and torch.equal(det.scores, from_list.scores)
    pixels = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)
    [from_tensor] = inference_detector(detector, pixels.contiguous())
    assert from_tensor.boxes.shape == from_list.boxes.shape
    with pytest.raises(TypeError, match=r"one uint8 image \[3, H, W\], got shape \(2, 3, 8, 8\)"):
        inference_detector(detector, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"expected an image path, .* got int"):
        inference_detector(detector, 7)


# -- 5. CLI value errors in one line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "error: override: runner.optimizer.lr: must be > 0, got -1.0"),
        (
            ["--batch-size", "0"],
            "error: override: data.train_loader.batch_size: must be > 0, got 0",
        ),
        (["--epochs", "0"], "error: RunnerConfig.max_epochs must be >= 1, got 0"),
        (["--iters", "0"], "error: RunnerConfig.max_iters must be >= 1, got 0"),
        (["--seed", "-1"], "error: ExperimentConfig.seed must be >= 0, got -1"),
    ],
)
def test_cli_value_errors_are_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(parse(flags)))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and err.strip().startswith(message)


@pytest.mark.slow  # a fresh interpreter importing torch: ~5 s alone, far more on a busy machine
def test_cli_one_line_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.faster_rcnn",
            "--lr",
            "-1",
            "--work-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: override: runner.optimizer.lr: must be > 0, got -1.0 (SGDConfig)"
    ]


def test_errors_from_inside_torch_keep_their_traceback():
    def torch_bug():
        torch.nn.functional.interpolate(torch.zeros(1, 1, 2, 2))  # ValueError raised by torch

    with pytest.raises(ValueError) as info:
        run_cli(torch_bug)
    assert not is_input_error(info.value)

    def own_check():
        dataclasses.replace(cpu_preset(), seed=-2)

    with pytest.raises(ValueError) as info:
        own_check()
    assert is_input_error(info.value)
    assert first_line(info.value) == "ExperimentConfig.seed must be >= 0, got -2"


def test_detfn_traceback_env_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("DETFN_TRACEBACK", "1")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        run_cli(lambda: dataclasses.replace(cpu_preset(), seed=-1))


def test_a_busy_work_dir_and_a_stopped_run_are_one_line(tmp_path, capsys):
    from detfn.engine.session import RunStopped, work_dir_lock

    def second_run():
        with work_dir_lock(tmp_path, resuming=False), work_dir_lock(tmp_path, resuming=False):
            pass

    with pytest.raises(SystemExit) as exit_info:
        run_cli(second_run)
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path}: another run (pid ") and "work dir" in line

    def stopped():
        raise RunStopped("SIGTERM at iteration 7; the state is saved in work_dirs/x/iter_7.pth")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(stopped)
    assert exit_info.value.code == 143
    assert capsys.readouterr().err.strip() == (
        "stopped: SIGTERM at iteration 7; the state is saved in work_dirs/x/iter_7.pth"
    )
