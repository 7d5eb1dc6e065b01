"""detfn.registry: dispatch on config type, MRO fallback, errors, notes on builder failures."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import pytest

from detfn.registry import (
    RegistryError,
    build,
    builder_for,
    class_of_tag,
    is_registered,
    register,
    tag_of,
)


@dataclass(frozen=True)
class LinearRegConfig:
    width: int = 4


@dataclass(frozen=True)
class WideLinearRegConfig(LinearRegConfig):
    width: int = 16


@dataclass(frozen=True)
class OwnBuilderRegConfig(LinearRegConfig):
    pass


@dataclass(frozen=True)
class NeverRegisteredConfig:
    x: int = 0


@register(LinearRegConfig)
def build_linear(cfg: LinearRegConfig, *, bias: bool = True) -> tuple[str, int, bool]:
    return ("linear", cfg.width, bias)


@register(OwnBuilderRegConfig, tag="own")
def build_own(cfg: OwnBuilderRegConfig) -> str:
    return "own"


def test_build_dispatches_on_type_and_passes_context():
    assert build(LinearRegConfig(), bias=False) == ("linear", 4, False)


def test_subclass_reuses_parent_builder_unless_it_registers_its_own():
    assert build(WideLinearRegConfig()) == ("linear", 16, True)
    assert build(OwnBuilderRegConfig()) == "own"
    assert not is_registered(WideLinearRegConfig) and is_registered(OwnBuilderRegConfig)


def test_tags_come_from_the_table():
    assert tag_of(LinearRegConfig) == "LinearReg" and class_of_tag("LinearReg") is LinearRegConfig
    assert tag_of(OwnBuilderRegConfig) == "own" and class_of_tag("own") is OwnBuilderRegConfig
    assert class_of_tag("nothing") is None


def test_unregistered_type_names_it_and_lists_registered_ones():
    with pytest.raises(
        RegistryError, match="no builder registered for .*NeverRegisteredConfig"
    ) as e:
        build(NeverRegisteredConfig())
    assert "LinearRegConfig" in str(e.value) and isinstance(e.value, KeyError)
    with pytest.raises(RegistryError):
        builder_for(NeverRegisteredConfig)


def test_double_registration_raises_unless_override():
    with pytest.raises(RegistryError, match="already registered.*override=True"):
        register(LinearRegConfig)(lambda cfg: None)
    register(LinearRegConfig, override=True)(lambda cfg, **kw: "replaced")
    try:
        assert build(LinearRegConfig()) == "replaced"
    finally:
        register(LinearRegConfig, override=True)(build_linear)
    assert build(LinearRegConfig()) == ("linear", 4, True)


def test_duplicate_tag_is_refused():
    @dataclass(frozen=True)
    class Other:
        pass

    with pytest.raises(RegistryError, match="tag 'own' .* already used"):
        register(Other, tag="own")(lambda cfg: None)


def test_register_and_build_reject_non_configs():
    with pytest.raises(TypeError, match="dataclass type"):
        register(int)
    with pytest.raises(TypeError, match="config instance"):
        build(LinearRegConfig)


@dataclass(frozen=True)
class InnerRegConfig:
    fail_with: str = "value"


@dataclass(frozen=True)
class OuterRegConfig:
    inner: InnerRegConfig = InnerRegConfig()


class CustomBuildError(RuntimeError):
    pass


@register(InnerRegConfig)
def build_inner(cfg: InnerRegConfig):
    if cfg.fail_with == "custom":
        raise CustomBuildError("boom inside builder")
    raise ValueError("bad channels")


@register(OuterRegConfig)
def build_outer(cfg: OuterRegConfig):
    return build(cfg.inner)


def test_builder_errors_keep_type_and_traceback_and_get_the_config_path():
    with pytest.raises(CustomBuildError, match="boom inside builder") as info:
        build(OuterRegConfig(inner=InnerRegConfig(fail_with="custom")))
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["detfn.build: raised while building OuterRegConfig.inner (InnerRegConfig)"]
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "build_inner"
    with pytest.raises(ValueError, match="bad channels"):
        build(InnerRegConfig())
