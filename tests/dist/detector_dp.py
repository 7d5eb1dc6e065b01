"""The real detector under 2 gloo ranks: Faster R-CNN R-18-FPN on tests/assets/tiny/bccd8."""

from __future__ import annotations

from pathlib import Path

from detfn.apis import ExperimentConfig, bccd_cpu_preset, build_experiment, train_detector
from detfn.apis.evaluate_dist import evaluate_dataset_on_ranks
from detfn.config import override
from detfn.data import build_loader, default_test_pipeline, default_train_pipeline
from detfn.dist import get_rank, get_world_size
from detfn.engine.hooks.evaluation import EvaluationHookConfig
from detfn.models.functional import detector_predict_fn
from experiments import test as test_cli

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "bccd8"
SCALE = (160, 120)


def tiny_config(work_dir: Path) -> ExperimentConfig:
    """The BCCD CPU preset on the 8 tiny images, small scale, one epoch of 1 image per rank."""
    cfg = bccd_cpu_preset()
    updates = {
        "work_dir": str(work_dir),
        "device": "cpu",
        "runner.max_epochs": 1,
        "runner.evaluation": EvaluationHookConfig(interval=1, save_best="auto"),
        "runner.wandb": None,
        "runner.text_logger.interval": 1,
        "data.train_loader.batch_size": 2,
        "data.train_loader.num_workers": 0,
        "data.test_loader.num_workers": 0,
        "model.roi_head.score_thr": 0.0,  # keep every detection of a barely trained model
    }
    for split in ("train", "val", "test"):
        updates[f"data.{split}.ann_file"] = str(TINY / "instances.json")
        updates[f"data.{split}.img_prefix"] = str(TINY / "JPEGImages")
    updates["data.train.pipeline"] = default_train_pipeline(scale=SCALE)
    updates["data.val.pipeline"] = default_test_pipeline(scale=SCALE)
    updates["data.test.pipeline"] = default_test_pipeline(scale=SCALE)
    return override(cfg, updates)


def evaluate_sharded(cfg: ExperimentConfig, params, buffers) -> dict:
    """COCO metrics of ``params`` on the val set, each rank predicting its shard."""
    built = build_experiment(cfg, with_train=False)
    loader = build_loader(
        built.val_set, cfg.data.test_loader, rank=get_rank(), world_size=get_world_size()
    )
    predict = detector_predict_fn(built.model)
    metrics = evaluate_dataset_on_ranks(
        predict, params, buffers, built.val_set, loader, class_names=built.val_set.class_names
    )
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def train_tiny_detector(env, out: Path) -> dict:
    """Train one epoch data parallel, then evaluate the final weights sharded."""
    cfg = tiny_config(out / ("work" if env.rank == 0 else "work_rank1"))
    state = train_detector(cfg)
    checksum = {n: float(p.double().abs().sum()) for n, p in state.params.items()}
    metrics = evaluate_sharded(cfg, state.params, state.buffers)  # after rank 0 saved
    work = out / "work"
    args = test_cli.TestArgs(
        config=str(work / "config.json"),
        checkpoint=str(work / "epoch_1.pth"),
        device="cpu",
        num_workers=0,
        classwise=False,
        out=str(out / f"results_rank{env.rank}.json"),
    )
    tested = test_cli.main(args)
    return {
        "checksum": checksum,
        "iters": state.iter,
        "metrics": metrics,
        "test_cli": {k: v for k, v in tested.items() if isinstance(v, float)},
    }
