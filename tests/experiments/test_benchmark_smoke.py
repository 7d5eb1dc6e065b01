"""experiments.benchmark runs end to end at a tiny size and both models do the same work.

A smoke test: it asserts that the run completes, that detfn and torchvision kept the same
proposals, sampled the same RoIs and fed the same candidates to the final NMS at every step
(so that a ratio is reported), and that the JSON file holds the results - never a timing.
"""

import json

from experiments.benchmark import BenchArgs, run


def test_benchmark_completes_with_equal_work(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = BenchArgs(
        depth=18,
        size=(64, 96),
        batch=1,
        num_classes=3,
        iters=1,
        warmup=0,
        memory=False,
        output=out,
    )
    report = run(args)
    printed = capsys.readouterr().out
    assert "WORK DIFFERS" not in printed
    assert "proposals=[" in printed and "rois=[" in printed and "nms_candidates=[" in printed
    for which in ("train", "inference"):
        assert report["results"][which]["equal_work"]
        assert report["results"][which]["ratio_median"] is not None
    assert json.loads(out.read_text())["settings"]["depth"] == 18
