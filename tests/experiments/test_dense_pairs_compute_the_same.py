"""The benchmark's RetinaNet and FCOS pairs compute the same losses and detections.

Equal work counts say both sides did as much work; this says it was the same work: with the
pair's mapped weights, detfn's whole detector (ResNet-18, FPN with P6/P7, head) gives
torchvision's losses and its 100 detections per image, on one synthetic 128 x 128 image (batch
size 1: torchvision normalises RetinaNet's losses per image, mmdetection over the batch).
"""

import pytest
import torch

from detfn.models.functional import detector_loss_fn, detector_predict_fn, split
from experiments.benchmark import BenchArgs, synthetic_batch
from experiments.benchmark_dense import fcos_models, retinanet_models
from experiments.benchmark_sides import BenchSettings

MODELS = {"retinanet": retinanet_models, "fcos": fcos_models}
SETTINGS = BenchSettings(18, 3, (128, 128), 0, torch.device("cpu"), None)
LOSS_NAMES = {
    "retinanet": {"loss_cls": "classification", "loss_bbox": "bbox_regression"},
    "fcos": {
        "loss_cls": "classification",
        "loss_bbox": "bbox_regression",
        "loss_centerness": "bbox_ctrness",
    },
}


@pytest.mark.parametrize("name", ["retinanet", "fcos"])
def test_pair_losses_and_detections_equal(name):
    model, reference = MODELS[name](SETTINGS)
    batch = synthetic_batch(BenchArgs(size=(128, 128), batch=1, num_classes=3), SETTINGS.device)
    targets = [{"boxes": batch.boxes[0], "labels": batch.labels[0]}]
    _, losses = detector_loss_fn(model)(*split(model), batch)
    reference.train()
    with torch.no_grad():
        expected = reference(list(batch.images), targets)
    for ours, theirs in LOSS_NAMES[name].items():
        assert expected[theirs] > 0, theirs
        torch.testing.assert_close(losses[ours], expected[theirs], rtol=1e-4, atol=1e-6)
    model.eval()
    reference.eval()
    with torch.no_grad():
        mine = detector_predict_fn(model)(*split(model), batch.images, batch.metas)[0]
        ref = reference(list(batch.images))[0]
    assert len(mine.scores) == len(ref["scores"]) == 100
    torch.testing.assert_close(mine.scores, ref["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.labels, ref["labels"])
    torch.testing.assert_close(mine.boxes, ref["boxes"], rtol=1e-4, atol=1e-3)
