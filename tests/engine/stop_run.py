"""A tiny run for the stop tests, run in a subprocess:
``python stop_run.py WORK_DIR term|int|none AT``; the tests resume it in their own process.

It trains ToyNet for 2 epochs of 8 batches; with ``term`` / ``int`` it sends itself SIGTERM /
SIGINT during iteration ``AT`` (a real signal, delivered mid-epoch). A hook writes
``after_run.txt`` at after_run; the final parameters go to ``final.pt``.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from engine_a_toys import ToyLoader, ToyNet, make_loss_fn, split, toy_data

from detfn.engine.events import Hook, Stage
from detfn.engine.hooks.checkpoint import CheckpointHookConfig
from detfn.engine.hooks.logger import TextLoggerHookConfig
from detfn.engine.optim import SGDConfig
from detfn.engine.runner import RunnerConfig, train
from detfn.engine.schedules import StepSchedule


def config(resume: bool) -> RunnerConfig:
    return RunnerConfig(
        max_epochs=2,
        optimizer=SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-3),
        lr=StepSchedule(step=(1,), warmup="linear", warmup_iters=3, warmup_ratio=0.1),
        checkpoint=CheckpointHookConfig(by_epoch=False, interval=4),
        text_logger=TextLoggerHookConfig(interval=1, console=False),
        auto_resume=resume,
    )


def run(work_dir: str, signal_name: str = "none", at: int = -1, resume: bool = False):
    torch.manual_seed(0)
    model = ToyNet(dropout=0.2)
    params, buffers = split(model)
    out = pathlib.Path(work_dir)
    sig = {"term": signal.SIGTERM, "int": signal.SIGINT}.get(signal_name)

    def send(event):
        if event.stage is Stage.AFTER_TRAIN_ITER and event.state.iter == at and sig:
            os.kill(os.getpid(), sig)
        if event.stage is Stage.AFTER_RUN:
            (out / "after_run.txt").write_text(repr(event.error))

    final = train(
        config(resume), params=params, buffers=buffers, loss_fn=make_loss_fn(model),
        train_loader=ToyLoader(toy_data(16), 2, seed=1), work_dir=out, hooks=[Hook("send", send)],
    )  # fmt: skip
    torch.save(dict(final.params), out / "final.pt")
    return final


if __name__ == "__main__":
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored:
    # restore the KeyboardInterrupt handler so that the test's SIGINT arrives however the
    # suite was launched.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
