"""RPNHead: shapes, loss values and training, batched proposals equal per-image ones."""

import math

import pytest
import torch

from detfn.models.anchors import AnchorGeneratorConfig, grid_anchors
from detfn.models.assigners import assign_max_iou
from detfn.models.coders import DeltaXYWHBBoxCoder, DeltaXYWHBBoxCoderConfig, encode_deltas
from detfn.models.dense_heads import ProposalConfig, RPNHeadConfig
from detfn.registry import build
from detfn.structures import Batch, ImageMeta

TINY = RPNHeadConfig(
    feat_channels=8,
    anchor_generator=AnchorGeneratorConfig(strides=(8, 16), scales=(4.0,), ratios=(0.5, 1.0, 2.0)),
)
CODER = DeltaXYWHBBoxCoder(DeltaXYWHBBoxCoderConfig())


def _meta(h, w):
    return ImageMeta("x.jpg", 0, (h, w), (h, w), (h, w))


def _batch(gts, shapes=((64, 64), (64, 64))):
    size = max(len(g) for g in gts)
    boxes = torch.zeros(len(gts), size, 4)
    mask = torch.zeros(len(gts), size, dtype=torch.bool)
    for i, g in enumerate(gts):
        if g:
            boxes[i, : len(g)] = torch.tensor(g)
            mask[i, : len(g)] = True
    return Batch(
        images=torch.zeros(len(gts), 3, 64, 64),
        boxes=boxes,
        labels=torch.where(mask, 0, -1),
        box_mask=mask,
        ignore_boxes=torch.zeros(len(gts), 0, 4),
        ignore_mask=torch.zeros(len(gts), 0, dtype=torch.bool),
        metas=tuple(_meta(*s) for s in shapes),
    )


def _feats(batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch_size, 4, 8, 8, generator=g),
        torch.randn(batch_size, 4, 4, 4, generator=g),
    ]


GTS = [[[8.0, 8.0, 40.0, 40.0]], [[20.0, 10.0, 60.0, 50.0], [0.0, 0.0, 30.0, 30.0]]]


def test_forward_shapes_and_init():
    torch.manual_seed(0)
    head = build(TINY, in_channels=4)
    cls_scores, bbox_preds = head(_feats())
    assert [tuple(c.shape) for c in cls_scores] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 12, 8, 8), (2, 12, 4, 4)]
    assert abs(head.rpn_conv.weight.std().item() - 0.01) < 0.002
    assert head.rpn_cls.bias.abs().sum() == 0 and head.rpn_reg.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="2 levels"):
        head(_feats()[:1])


def test_default_config_is_mmdetection():
    cfg = RPNHeadConfig()
    assert cfg.feat_channels == 256
    assert cfg.anchor_generator.strides == (4, 8, 16, 32, 64) and cfg.anchor_generator.scales == (
        8.0,
    )
    assert (cfg.assigner.pos_iou_thr, cfg.assigner.neg_iou_thr, cfg.assigner.min_pos_iou) == (
        0.7,
        0.3,
        0.3,
    )
    assert cfg.assigner.match_low_quality and cfg.assigner.ignore_iof_thr == -1
    assert (cfg.sampler.num, cfg.sampler.pos_fraction, cfg.sampler.neg_pos_ub) == (256, 0.5, -1)
    assert not cfg.sampler.add_gt_as_proposals
    assert (
        cfg.loss_cls.use_sigmoid
        and cfg.loss_cls.loss_weight == 1.0
        and cfg.loss_bbox.loss_weight == 1.0
    )
    assert cfg.bbox_coder.target_stds == (1.0, 1.0, 1.0, 1.0)
    assert (cfg.train_proposal.nms_pre, cfg.train_proposal.max_per_img) == (2000, 1000)
    assert (cfg.test_proposal.nms_pre, cfg.test_proposal.max_per_img) == (1000, 1000)
    assert cfg.train_proposal.iou_threshold == 0.7 and cfg.test_proposal.min_bbox_size == 0.0
    with pytest.raises(ValueError, match="RPNHeadConfig.loss_cls"):
        RPNHeadConfig(loss_cls=type(cfg.loss_cls)(use_sigmoid=False))


def test_loss_value_with_zero_weights():
    """Zero outputs: every sampled anchor costs log 2; the box loss is |targets| of positives."""
    head = build(TINY, in_channels=4)
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    batch = _batch(GTS)
    cls_scores, bbox_preds = head(_feats())
    losses = head.loss_by_outputs(cls_scores, bbox_preds, batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["loss_rpn_cls"], torch.tensor(math.log(2.0)))
    # each image has < 128 positives, so all are sampled; negatives fill to 256 (there are 240)
    anchors = torch.cat(grid_anchors(TINY.anchor_generator, [(8, 8), (4, 4)]))
    total, samples = 0.0, 0
    for i in range(2):
        res = assign_max_iou(
            TINY.assigner,
            anchors[None],
            torch.ones(1, 240, dtype=torch.bool),
            batch.boxes[i : i + 1],
            batch.box_mask[i : i + 1],
            batch.ignore_boxes[i : i + 1],
            batch.ignore_mask[i : i + 1],
        )
        pos = res.assigned[0] > 0
        gt = batch.boxes[i][res.assigned[0][pos] - 1]
        total += encode_deltas(anchors[pos], gt).abs().sum().item()
        samples += min(int(pos.sum()), 128) + min(
            int((res.assigned[0] == 0).sum()), 256 - int(pos.sum())
        )
        assert 0 < pos.sum() < 128
    torch.testing.assert_close(losses["loss_rpn_bbox"], torch.tensor(total / samples))


def test_loss_decreases_with_sgd():
    torch.manual_seed(0)
    head = build(TINY, in_channels=4)
    batch, feats = _batch(GTS), _feats()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    history = []
    for _ in range(15):
        losses = head.loss_by_outputs(*head(feats), batch, torch.Generator().manual_seed(0))
        total = losses["loss_rpn_cls"] + losses["loss_rpn_bbox"]
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.7 * history[0], history


def test_loss_without_gt_and_gradients():
    torch.manual_seed(0)
    head = build(TINY, in_channels=4)
    batch = _batch([[], []])
    losses = head.loss_by_outputs(*head(_feats()), batch, torch.Generator().manual_seed(0))
    assert losses["loss_rpn_bbox"] == 0 and torch.isfinite(losses["loss_rpn_cls"])
    (losses["loss_rpn_cls"] + losses["loss_rpn_bbox"]).backward()
    assert head.rpn_cls.weight.grad.abs().sum() > 0


def test_batched_proposals_equal_single_image():
    torch.manual_seed(0)
    cfg = RPNHeadConfig(
        feat_channels=8,
        anchor_generator=AnchorGeneratorConfig(
            strides=(8, 16), scales=(2.0,), ratios=(0.5, 1.0, 2.0)
        ),
        test_proposal=ProposalConfig(
            nms_pre=100, max_per_img=60, iou_threshold=0.5, min_bbox_size=2.0
        ),
    )
    head = build(cfg, in_channels=4)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    feats = _feats(3, seed=1)
    shapes = torch.tensor([[64, 64], [50, 40], [33, 60]])
    cls_scores, bbox_preds = head(feats)
    boxes, scores, mask = head.proposals(cls_scores, bbox_preds, shapes, training=False)
    assert boxes.shape[0] == 3 and boxes.shape[1] <= 60 and not boxes.requires_grad
    for i in range(3):
        one = head.proposals(
            [c[i : i + 1] for c in cls_scores],
            [b[i : i + 1] for b in bbox_preds],
            shapes[i : i + 1],
            training=False,
        )
        n = int(mask[i].sum())
        assert n == int(one.mask.sum()) and n > 5
        assert mask[i, :n].all() and not mask[i, n:].any()
        torch.testing.assert_close(boxes[i, :n], one.boxes[0, :n])
        torch.testing.assert_close(scores[i, :n], one.scores[0, :n])
        assert (scores[i, 1:n] <= scores[i, : n - 1]).all()  # sorted
        assert (boxes[i, :n, 2] <= shapes[i, 1]).all() and (boxes[i, :n, 3] <= shapes[i, 0]).all()


def _select(cfg, anchors, scores, deltas=None, shapes=((100, 100),)):
    from detfn.models.dense_heads.rpn import select_proposals

    if deltas is None:
        deltas = [torch.zeros(*s.shape, 4) for s in scores]
    return select_proposals(cfg, CODER, anchors, scores, deltas, torch.tensor(shapes))


def test_min_bbox_size_hand_case():
    anchors = [
        torch.tensor(
            [
                [0.0, 0.0, 10.0, 10.0],
                [20.0, 0.0, 24.0, 10.0],
                [40.0, 40.0, 44.5, 50.0],
                [-10.0, 60.0, -2.0, 70.0],
            ]
        )
    ]
    scores = [torch.tensor([[0.9, 0.8, 0.7, 0.6]])]
    out = _select(ProposalConfig(nms_pre=10, max_per_img=10, min_bbox_size=4.0), anchors, scores)
    # width 4 is not > 4: dropped; width 4.5 kept; the last clips to width 0
    torch.testing.assert_close(
        out.boxes[0], torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 44.5, 50.0]])
    )
    torch.testing.assert_close(out.scores[0], torch.tensor([0.9, 0.7]))
    out = _select(ProposalConfig(nms_pre=10, max_per_img=10, min_bbox_size=0.0), anchors, scores)
    assert out.mask.sum() == 3  # only the zero-width clipped box goes


def test_nms_is_per_level_and_per_image_and_caps():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    anchors = [box, box]
    scores = [
        torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.4, 0.3]]),
        torch.tensor([[0.7, 0.6, 0.2], [0.2, 0.1, 0.05]]),
    ]
    cfg = ProposalConfig(nms_pre=10, max_per_img=10, iou_threshold=0.7)
    out = _select(cfg, anchors, scores, shapes=((100, 100), (100, 100)))
    # within a level box 1 (IoU 0.82 with box 0) is suppressed; across levels nothing is
    torch.testing.assert_close(out.scores[0], torch.tensor([0.9, 0.7, 0.2, 0.1]))
    torch.testing.assert_close(out.scores[1], torch.tensor([0.5, 0.3, 0.2, 0.05]))
    capped = _select(
        ProposalConfig(nms_pre=10, max_per_img=3), anchors, scores, shapes=((100, 100),) * 2
    )
    assert capped.boxes.shape == (2, 3, 4) and capped.mask.all()
    torch.testing.assert_close(capped.scores, torch.tensor([[0.9, 0.7, 0.2], [0.5, 0.3, 0.2]]))
    # nms_pre=1 keeps the best anchor of each level and image only
    top1 = _select(
        ProposalConfig(nms_pre=1, max_per_img=10), anchors, scores, shapes=((100, 100),) * 2
    )
    torch.testing.assert_close(top1.scores, torch.tensor([[0.9, 0.7], [0.5, 0.2]]))


def test_proposals_decode_deltas_and_empty():
    anchors = [torch.tensor([[10.0, 10.0, 20.0, 20.0]])]
    deltas = [torch.tensor([[[0.5, 0.0, math.log(2.0), 0.0]]])]
    out = _select(ProposalConfig(), anchors, [torch.tensor([[0.5]])], deltas)
    torch.testing.assert_close(out.boxes, torch.tensor([[[10.0, 10.0, 30.0, 20.0]]]))
    none = _select(ProposalConfig(), [torch.zeros(0, 4)], [torch.zeros(1, 0)])
    assert none.boxes.shape == (1, 0, 4) and none.mask.shape == (1, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    head = build(TINY, in_channels=4)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    batch, feats = _batch(GTS), _feats()
    cpu = head.loss_by_outputs(*head(feats), batch, torch.Generator().manual_seed(0))
    head_gpu = build(TINY, in_channels=4).cuda()
    head_gpu.load_state_dict(head.state_dict())
    feats_gpu = [f.cuda() for f in feats]
    gpu = head_gpu.loss_by_outputs(
        *head_gpu(feats_gpu), batch.to("cuda"), torch.Generator().manual_seed(0)
    )
    for key in cpu:
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-4, atol=1e-5)
    shapes = torch.tensor([[64, 64], [50, 40]])
    a = head.proposals(*head(feats), shapes, training=True)
    b = head_gpu.proposals(*head_gpu(feats_gpu), shapes.cuda(), training=True)
    assert torch.equal(a.mask, b.mask.cpu())
    torch.testing.assert_close(b.boxes.cpu(), a.boxes, rtol=1e-4, atol=1e-3)
