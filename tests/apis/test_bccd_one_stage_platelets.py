"""The ATSS bccd preset clips gradients, as the FCOS one: unclipped, its warmup spike wrecks the
classifier (platelets scored as RBC)."""

from __future__ import annotations

import pytest

from detfn.apis import atss_bccd_preset, fcos_bccd_preset
from detfn.engine.hooks.optimizer import GradClipConfig


@pytest.mark.parametrize("preset", [atss_bccd_preset, fcos_bccd_preset])
def test_one_stage_bccd_presets_clip_gradients_at_35(preset):
    assert preset().runner.optimizer_hook.grad_clip == GradClipConfig(max_norm=35.0, norm_type=2.0)
