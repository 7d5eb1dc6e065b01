"""experiments.compare_torchvision_mask's MaskRCNN twin sees what the nuclei preset's model sees.

The twin must be trained on the very tensors detfn's loader produces: torchvision's own
transform would otherwise resize the preset's 320x320 training crops (its ``min_size`` is the
evaluation images' 512) and every comparison would be at a different scale. Its anchors must be
the preset's (one size per level: scale x stride).
"""

from __future__ import annotations

import torch

from detfn.apis import build_experiment, mask_rcnn_nuclei_preset
from detfn.data import build_loader
from detfn.data.presets import NUCLEI_SCALE
from experiments.compare_torchvision import images_and_targets
from experiments.compare_torchvision_mask import torchvision_mask_model


def test_twin_takes_the_preset_batches_unresized():
    cfg = mask_rcnn_nuclei_preset()
    built = build_experiment(cfg)
    torch.manual_seed(0)
    twin = torchvision_mask_model(cfg.model, NUCLEI_SCALE)

    # the preset's GroupNorm backbone (BatchNorm's running statistics fit no nuclei modality)
    assert cfg.model.backbone.norm == "GN"
    assert isinstance(twin.backbone.body.bn1, torch.nn.GroupNorm)
    assert twin.backbone.body.bn1.num_groups == 32
    # anchors: the preset's scale 4 on strides 4..64, three ratios
    assert twin.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert twin.rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5

    train_batch = next(iter(build_loader(built.train_set, cfg.data.train_loader)))
    images, targets = images_and_targets(train_batch)
    twin.train()
    image_list, moved = twin.transform(images, targets)
    assert image_list.image_sizes == [(320, 320), (320, 320)]  # the preset's crops
    for target, before in zip(moved, targets):
        torch.testing.assert_close(target["boxes"], before["boxes"])
        assert target["masks"].shape[-2:] == before["masks"].shape[-2:]

    val_batch = next(iter(build_loader(built.val_set, cfg.data.test_loader)))
    images, _ = images_and_targets(val_batch)
    twin.eval()
    image_list, _ = twin.transform(images)
    assert image_list.image_sizes == [meta.img_shape for meta in val_batch.metas]
    assert all(min(shape) == 512 for shape in image_list.image_sizes)  # nuclei at twice size
