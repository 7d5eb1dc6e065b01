"""detfn.config: JSON round trips, polymorphic fields, load errors, validation, override."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from detfn.config import (
    Config,
    ConfigError,
    ConfigTypeError,
    check_positive,
    check_unit_interval,
    from_dict,
    from_json,
    load,
    override,
    save,
    to_dict,
    to_json,
)
from detfn.registry import build, register


@dataclass(frozen=True)
class ConvNetCodecConfig(Config):
    depth: Literal[18, 34, 50] = 50
    strides: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class SwinCodecConfig(Config):
    embed_dim: int = 96
    window: tuple[int, int] = (7, 7)


@dataclass(frozen=True)
class ViTCodecConfig(Config):
    patch: int = 16
    name: Optional[str] = None


@dataclass(frozen=True)
class OptimCodecConfig(Config):
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = False
    milestones: tuple[int, ...] = (8, 11)

    def __post_init__(self):
        check_positive(self, "lr")
        check_unit_interval(self, "momentum")


@dataclass(frozen=True)
class ModelCodecConfig(Config):
    backbone: ConvNetCodecConfig | SwinCodecConfig | ViTCodecConfig = ConvNetCodecConfig()
    neck: Optional[SwinCodecConfig] = None
    mode: Literal["train", "eval"] = "train"


@dataclass(frozen=True)
class ExperimentCodecConfig(Config):
    model: ModelCodecConfig = ModelCodecConfig()
    optim: OptimCodecConfig = OptimCodecConfig()
    tags: tuple[str, ...] = ()
    seed: Optional[int] = 0


for _cls in (ConvNetCodecConfig, SwinCodecConfig, ViTCodecConfig):
    register(_cls)(lambda cfg: type(cfg).__name__)


@pytest.mark.parametrize(
    "backbone",
    [ConvNetCodecConfig(depth=18), SwinCodecConfig(embed_dim=128), ViTCodecConfig(name="b")],
)
def test_polymorphic_field_round_trips_to_its_own_class(backbone):
    cfg = ExperimentCodecConfig(model=ModelCodecConfig(backbone=backbone), tags=("a", "b"))
    text = to_json(cfg)
    back = from_json(text, ExperimentCodecConfig)
    assert back == cfg
    assert type(back.model.backbone) is type(backbone)
    assert (
        json.loads(text)["model"]["backbone"]["type"] == type(backbone).__name__[: -len("Config")]
    )


def test_tuples_optional_and_literal_keep_their_types():
    cfg = ExperimentCodecConfig(
        model=ModelCodecConfig(neck=SwinCodecConfig(window=(3, 5))), seed=None
    )
    back = from_json(to_json(cfg), ExperimentCodecConfig)
    assert isinstance(back.optim.milestones, tuple) and back.optim.milestones == (8, 11)
    assert back.model.neck == SwinCodecConfig(window=(3, 5)) and back.seed is None
    assert isinstance(back.model.neck.window, tuple)


def test_mixin_methods_use_the_same_codec():
    cfg = ModelCodecConfig(backbone=SwinCodecConfig())
    assert cfg.to_json() == json.dumps(to_dict(cfg))
    assert ModelCodecConfig.from_json(cfg.to_json()) == cfg


def test_int_accepted_for_float_but_bool_is_not_int():
    assert from_dict({"lr": 1}, OptimCodecConfig).lr == 1.0
    with pytest.raises(ConfigTypeError, match=r"^patch: expected int, got True$"):
        from_dict({"patch": True}, ViTCodecConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"optim": {"lrr": 0.1}},
            r"optim\.lrr: unknown field of OptimCodecConfig; did you mean 'lr'\?",
        ),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: expected float, got 'fast'"),
        ({"model": {"mode": "bogus"}}, r"model\.mode: 'bogus' is not one of \('train', 'eval'\)"),
        (
            {"model": {"backbone": {"type": "Resnet"}}},
            r"model\.backbone: unknown type tag 'Resnet'; known tags: \['ConvNetCodec', 'SwinCodec', 'ViTCodec'\]",
        ),
        ({"model": {"backbone": {"embed_dim": 3}}}, r"model\.backbone: missing 'type' tag"),
        (
            {"model": {"backbone": {"type": "ConvNetCodec", "depth": 51}}},
            r"model\.backbone\.depth: 51 is not one of \(18, 34, 50\)",
        ),
        (
            {"model": {"neck": {"window": [1, 2, 3]}}},
            r"model\.neck\.window: expected 2 items, got 3",
        ),
        ({"optim": {"milestones": [8, "x"]}}, r"optim\.milestones\[1\]: expected int, got 'x'"),
        ({"tags": "abc"}, r"tags: expected a list, got 'abc'"),
        ({"optim": {"lr": -0.1}}, r"^optim\.lr: must be > 0, got -0\.1 \(OptimCodecConfig\)$"),
    ],
)
def test_load_errors_are_one_line_and_name_the_dotted_path(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(data, ExperimentCodecConfig)
    assert "\n" not in str(info.value)


def test_invalid_json_text():
    with pytest.raises(ConfigError, match="invalid JSON"):
        from_json("{", ExperimentCodecConfig)


def test_validation_at_construction_names_the_field():
    with pytest.raises(ValueError, match=r"OptimCodecConfig\.lr must be > 0, got -1"):
        OptimCodecConfig(lr=-1)
    with pytest.raises(ValueError, match=r"OptimCodecConfig\.momentum must be in \[0\.0, 1\.0\]"):
        OptimCodecConfig(momentum=1.5)


def test_save_and_load_files(tmp_path):
    cfg = ExperimentCodecConfig(model=ModelCodecConfig(backbone=ViTCodecConfig(patch=8)))
    path = save(cfg, tmp_path / "sub" / "config.json")
    assert load(path, ExperimentCodecConfig) == cfg
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "bad.json").write_text('{"optim": {"momentun": 0.8}}')
    with pytest.raises(ConfigError, match=r"bad\.json: optim\.momentun: unknown field.*'momentum'"):
        load(tmp_path / "bad.json", ExperimentCodecConfig)
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read config"):
        load(tmp_path / "missing.json", ExperimentCodecConfig)


def test_override_nested_paths_and_errors():
    cfg = ExperimentCodecConfig()
    new = override(cfg, "model.backbone.depth", 18)
    assert new.model.backbone.depth == 18 and cfg.model.backbone.depth == 50
    assert override(cfg, "optim.milestones", [1, 2]).optim.milestones == (1, 2)
    swapped = override(cfg, "model.backbone", SwinCodecConfig())
    assert isinstance(swapped.model.backbone, SwinCodecConfig)
    with pytest.raises(ConfigError, match=r"override: model\.backbon: .*did you mean 'backbone'\?"):
        override(cfg, "model.backbon.depth", 18)
    with pytest.raises(ConfigError, match=r"model\.backbone\.depth: 19 is not one of"):
        override(cfg, "model.backbone.depth", 19)
    with pytest.raises(
        ValueError, match=r"override: optim\.lr: must be > 0, got -1\.0 \(OptimCodecConfig\)"
    ):
        override(cfg, "optim.lr", -1.0)
    with pytest.raises(ConfigError, match=r"optim\.lr\.x: .* has no field 'x'"):
        override(cfg, "optim.lr.x", 1)


def test_override_indexes_tuples_of_configs():
    @dataclass(frozen=True)
    class Pipeline:
        steps: tuple[ConvNetCodecConfig, ...] = (ConvNetCodecConfig(), ConvNetCodecConfig())

    new = override(Pipeline(), "steps.1.depth", 34)
    assert new.steps == (ConvNetCodecConfig(), ConvNetCodecConfig(depth=34))
    with pytest.raises(ConfigError, match="bad index '5'"):
        override(Pipeline(), "steps.5.depth", 34)


@dataclass(frozen=True)
class BaseHeadCodecConfig:
    channels: int = 8


@dataclass(frozen=True)
class RetinaHeadCodecConfig(BaseHeadCodecConfig):
    convs: int = 4


@dataclass(frozen=True)
class FCOSHeadCodecConfig(BaseHeadCodecConfig):
    centerness: bool = True


@dataclass(frozen=True)
class DetectorCodecConfig:
    head: RetinaHeadCodecConfig | FCOSHeadCodecConfig = RetinaHeadCodecConfig()


def test_user_type_outside_detfn_joins_a_polymorphic_field_through_its_base():
    @dataclass(frozen=True)
    class MyHeadCodecConfig(BaseHeadCodecConfig):
        extra: tuple[float, ...] = (0.5,)

    register(MyHeadCodecConfig, tag="my_head")(lambda cfg, scale=1: ("my head", cfg.extra, scale))
    cfg = DetectorCodecConfig(head=MyHeadCodecConfig(channels=3))
    back = from_json(to_json(cfg), DetectorCodecConfig)
    assert back == cfg and type(back.head) is MyHeadCodecConfig
    assert build(back.head, scale=2) == ("my head", (0.5,), 2)


def test_plain_frozen_dataclasses_work_without_the_base():
    @dataclass(frozen=True)
    class Plain:
        a: tuple[float, float] = (1.0, 2.0)
        b: Optional[Literal["x", "y"]] = None

    cfg = Plain(b="y")
    assert from_json(to_json(cfg), Plain) == cfg
    assert dataclasses.replace(cfg, b=None) == Plain()


@dataclass(frozen=True)
class PairCodecConfig:
    a: int = 1
    b: int = 1

    def __post_init__(self):
        if self.a != self.b:
            raise ValueError(f"PairCodecConfig.a must equal b, got {self.a} != {self.b}")


@dataclass(frozen=True)
class HolderCodecConfig:
    pair: PairCodecConfig = PairCodecConfig()
    name: str = "x"


def test_override_many_paths_rebuilds_each_config_once():
    cfg = HolderCodecConfig()
    with pytest.raises(ConfigError, match=r"override: pair\.a: must equal b, got 2 != 1"):
        override(cfg, "pair.a", 2)
    new = override(cfg, {"pair.a": 2, "pair.b": 2, "name": "y"})
    assert new == HolderCodecConfig(pair=PairCodecConfig(2, 2), name="y")
    with pytest.raises(ConfigError, match="inside a field that is also replaced whole"):
        override(cfg, {"pair": PairCodecConfig(), "pair.a": 3})
    with pytest.raises(TypeError, match="needs the value"):
        override(cfg, "name")
