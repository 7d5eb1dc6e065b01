"""RandomSampler: counts on constructed cases, upper bound, determinism, row independence."""

import pytest
import torch

from detfn.models.samplers import RandomSamplerConfig, random_sample, rank_within
from detfn.registry import build

RPN = RandomSamplerConfig(256, 0.5, -1, add_gt_as_proposals=False)


def _assigned(num_pos, num_neg, num_ignore, seed=0):
    values = torch.cat(
        (
            torch.ones(num_pos, dtype=torch.long),
            torch.zeros(num_neg, dtype=torch.long),
            torch.full((num_ignore,), -1, dtype=torch.long),
        )
    )
    return values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed))]


def test_few_positives_fill_with_negatives():
    assigned = _assigned(3, 1000, 50)[None]
    res = random_sample(RPN, assigned, torch.Generator().manual_seed(0))
    assert res.pos_mask.sum() == 3 and res.neg_mask.sum() == 253
    assert not (res.pos_mask & res.neg_mask).any()
    assert (assigned[res.pos_mask] > 0).all() and (assigned[res.neg_mask] == 0).all()


def test_positive_cap_and_small_pools():
    rows = torch.stack(
        [_assigned(500, 1000, 10, 1), _assigned(10, 20, 1480, 2), _assigned(0, 300, 1210, 3)]
    )
    res = build(RPN)(rows, torch.Generator().manual_seed(0))
    assert res.pos_mask.sum(1).tolist() == [128, 10, 0]
    assert res.neg_mask.sum(1).tolist() == [128, 20, 256]
    rcnn = RandomSamplerConfig(512, 0.25)
    res = random_sample(rcnn, rows, torch.Generator().manual_seed(0))
    assert res.pos_mask.sum(1).tolist() == [128, 10, 0]
    assert res.neg_mask.sum(1).tolist() == [384, 20, 300]
    assert (rows[res.pos_mask | res.neg_mask] >= 0).all()  # ignored never sampled


def test_neg_pos_upper_bound():
    cfg = RandomSamplerConfig(256, 0.5, neg_pos_ub=3)
    rows = torch.stack(
        [_assigned(5, 1000, 200, 4), _assigned(0, 1000, 205, 5), _assigned(200, 1000, 5, 6)]
    )
    res = random_sample(cfg, rows, torch.Generator().manual_seed(0))
    assert res.pos_mask.sum(1).tolist() == [5, 0, 128]
    # negatives <= int(ub * max(1, num_pos)), and <= num - num_pos
    assert res.neg_mask.sum(1).tolist() == [15, 3, 128]


def test_deterministic_with_seed_and_varies_with_seed():
    rows = torch.stack([_assigned(300, 1000, 10, 7)] * 2)
    a = random_sample(RPN, rows, torch.Generator().manual_seed(11))
    b = random_sample(RPN, rows, torch.Generator().manual_seed(11))
    c = random_sample(RPN, rows, torch.Generator().manual_seed(12))
    assert torch.equal(a.pos_mask, b.pos_mask) and torch.equal(a.neg_mask, b.neg_mask)
    assert not torch.equal(a.pos_mask, c.pos_mask)
    # identical rows are sampled independently
    assert not torch.equal(a.pos_mask[0], a.pos_mask[1])


def test_uniform_over_candidates():
    # each of 10 positives is chosen with probability 2/10 when 2 are taken
    cfg = RandomSamplerConfig(4, 0.5)
    rows = _assigned(10, 0, 0, 8)[None].expand(4000, -1)
    res = random_sample(cfg, rows, torch.Generator().manual_seed(0))
    freq = res.pos_mask.float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.2), atol=0.03)


def test_rank_within_hand_case():
    keys = torch.tensor([[0.5, 0.1, 0.9, 0.3]])
    member = torch.tensor([[True, False, True, True]])
    ranks = rank_within(keys, member)
    assert ranks[member].tolist() == [1, 2, 0]


def test_empty_and_errors():
    res = random_sample(RPN, torch.zeros(2, 0, dtype=torch.long))
    assert res.pos_mask.shape == (2, 0)
    with pytest.raises(ValueError, match="RandomSamplerConfig.neg_pos_ub"):
        RandomSamplerConfig(neg_pos_ub=-2)
    with pytest.raises(ValueError, match="integer tensor"):
        random_sample(RPN, torch.zeros(5))


def test_pseudo_sampler_keeps_every_positive_and_negative_hand_counted():
    from detfn.models.samplers import PseudoSamplerConfig
    from detfn.registry import build

    assigned = torch.tensor([[-1, 0, 2, 0, 1, 0], [0, 0, -1, -1, 3, 0]])
    sampler = build(PseudoSamplerConfig())
    pos, neg = sampler(assigned, None)
    # image 0: positives at 2 and 4, negatives at 1, 3 and 5; image 1: positive 4, negatives 0, 1, 5
    assert pos.sum(1).tolist() == [2, 1] and neg.sum(1).tolist() == [3, 3]
    assert pos[0].nonzero().flatten().tolist() == [2, 4]
    assert neg[1].nonzero().flatten().tolist() == [0, 1, 5]
    assert not (pos & neg).any() and not (pos | neg)[assigned == -1].any()
    assert sampler.sampling is False
