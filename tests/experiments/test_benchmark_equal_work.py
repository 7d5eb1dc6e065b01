"""The benchmark's equal-work rule: no ratio when the two sides' work differs, and torchvision's
small-box filter given to detfn's R-CNN head so that both feed the same pairs to the final NMS.
"""

import torch
from torch import nn
from torchvision.ops import remove_small_boxes

from experiments.benchmark import BenchArgs, interleaved
from experiments.benchmark_models import drop_small_boxes
from experiments.benchmark_sides import Probe, Side


def _side(counts: list[int]) -> Side:
    probe = Probe()

    def step():
        probe.add("nms_candidates", counts)

    return Side(step, step, lambda: None, probe, nn.Identity())


def test_no_ratio_when_work_differs(capsys):
    args = BenchArgs(iters=2, warmup=0)
    same = interleaved(_side([3, 4]), _side([3, 4]), "inference", args, torch.device("cpu"))
    assert same["equal_work"] and same["ratio_median"] is not None
    differ = interleaved(_side([3, 4]), _side([3, 5]), "inference", args, torch.device("cpu"))
    assert not differ["equal_work"]
    assert differ["ratio_median"] is None and differ["ratio_min"] is None
    assert "WORK DIFFERS" in capsys.readouterr().out


class _Head(nn.Module):
    """decode() returning fixed scores Tensor[K, C + 1] and boxes Tensor[K, C, 4]."""

    def decode(self, *args):
        scores = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
        boxes = torch.tensor(
            [
                [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.005, 20.0]],  # class 1: 0.005 px wide
                [[4.0, 4.0, 4.015625, 4.015625], [0.0, 0.0, 0.0, 0.0]],  # 1/64 px: kept
            ]
        )
        return scores, boxes


def test_drop_small_boxes_zeroes_the_scores_torchvision_removes():
    head = _Head()
    drop_small_boxes(head)
    scores, boxes = head.decode()
    expected = torch.tensor([[0.5, 0.0, 0.2], [0.6, 0.0, 0.3]])  # background column untouched
    torch.testing.assert_close(scores, expected)
    # torchvision's own filter keeps exactly the pairs left with a score
    kept = remove_small_boxes(boxes.reshape(-1, 4), min_size=1e-2)
    assert kept.tolist() == scores[:, :-1].reshape(-1).nonzero().squeeze(1).tolist()
    assert boxes.shape == (2, 2, 4)
