"""The registry: one table from config dataclass type to the builder that turns it into an object.

mmcv keyed its registries by a string ``type`` inside a dict and buried builder errors under its
own message. detfn keys by the config *class* itself:

    @register(ResNetConfig)
    def build_resnet(cfg: ResNetConfig, **context) -> nn.Module: ...

    backbone = build(ResNetConfig(depth=50))

Contract of a builder: it takes the config as its first argument and any keyword ``context``
the caller passes to :func:`build` (``in_channels=...``, ``num_classes=...``); it returns the built
object and has no other side effect. ``build`` walks the config's MRO, so a subclassed config
reuses its parent's builder until it registers one of its own.

The same table owns the JSON type tags that :mod:`detfn.config` writes for polymorphic fields, so
a user type registered outside detfn round-trips through JSON with no edit of detfn.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "RegistryError",
    "build",
    "builder_for",
    "class_of_tag",
    "is_registered",
    "register",
    "registered_types",
    "tag_of",
]

C = TypeVar("C")
B = TypeVar("B", bound=Callable[..., Any])


class RegistryError(KeyError):
    """Raised for registration conflicts and lookups of types that nobody registered.

    A ``KeyError`` subclass (as mmcv's registry raised), but its message prints as plain text.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Entry(NamedTuple):
    builder: Callable[..., Any]
    tag: str


_TABLE: dict[type, _Entry] = {}
_TAGS: dict[str, type] = {}
# The configs being built right now, outermost first; used to name the failing config's path.
_BUILD_STACK: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "detfn_build_stack", default=()
)


def default_tag(cfg_type: type) -> str:
    """The tag a class gets when no tag is given: its name without a trailing ``Config``."""
    name = cfg_type.__name__
    return name[: -len("Config")] if name.endswith("Config") and name != "Config" else name


def register(cfg_type: type, *, tag: str | None = None, override: bool = False) -> Callable[[B], B]:
    """Decorator: make ``builder`` the builder of configs of exactly ``cfg_type``.

    Args:
        cfg_type: a dataclass type; its instances are dispatched to the decorated builder.
        tag: the JSON type tag written for polymorphic fields; defaults to the class name less
            a trailing ``Config`` (``ResNetConfig`` -> ``"ResNet"``). Tags are unique.
        override: replace an existing registration instead of raising.

    Returns the builder unchanged, so it stays an ordinary importable function.
    """
    if not isinstance(cfg_type, type) or not dataclasses.is_dataclass(cfg_type):
        raise TypeError(f"register() takes a dataclass type, got {cfg_type!r}")
    the_tag = tag if tag is not None else default_tag(cfg_type)

    def decorate(builder: B) -> B:
        if not callable(builder):
            raise TypeError(f"register({cfg_type.__name__}) decorates a function, got {builder!r}")
        old = _TABLE.get(cfg_type)
        if old is not None and not override:
            raise RegistryError(
                f"{_qualname(cfg_type)} is already registered (builder "
                f"{_qualname(old.builder)}); pass override=True to replace it"
            )
        holder = _TAGS.get(the_tag)
        if holder is not None and holder is not cfg_type and not override:
            raise RegistryError(
                f"type tag {the_tag!r} of {_qualname(cfg_type)} is already used by "
                f"{_qualname(holder)}; pass register(..., tag='another_name')"
            )
        if old is not None:
            _TAGS.pop(old.tag, None)
        _TABLE[cfg_type] = _Entry(builder, the_tag)
        _TAGS[the_tag] = cfg_type
        return builder

    return decorate


def registered_types() -> tuple[type, ...]:
    """Every registered config type, in registration order."""
    return tuple(_TABLE)


def is_registered(cfg_type: type) -> bool:
    """Whether ``cfg_type`` itself (not a base class) has a builder."""
    return cfg_type in _TABLE


def builder_for(cfg_type: type) -> Callable[..., Any]:
    """The builder for ``cfg_type``, found along its MRO; raises :class:`RegistryError` if none."""
    for klass in cfg_type.__mro__:
        entry = _TABLE.get(klass)
        if entry is not None:
            return entry.builder
    known = ", ".join(sorted(t.__name__ for t in _TABLE)) or "none"
    raise RegistryError(
        f"no builder registered for {_qualname(cfg_type)}; registered types: {known}. "
        f"Decorate a builder with @register({cfg_type.__name__}) and import its module first."
    )


def tag_of(cfg_type: type) -> str:
    """The JSON type tag of ``cfg_type``: its registered tag, else the default tag."""
    entry = _TABLE.get(cfg_type)
    return entry.tag if entry is not None else default_tag(cfg_type)


def class_of_tag(tag: str) -> type | None:
    """The registered class for a JSON type tag, or None."""
    return _TAGS.get(tag)


def build(cfg: Any, **context: Any) -> Any:
    """Build the object a config describes by calling its registered builder.

    ``context`` is passed to the builder as keyword arguments. An exception raised by the builder
    propagates with its own type and traceback; a note naming the config path is added to it
    (``TwoStageDetectorConfig.backbone (ResNetConfig)``), once, at the innermost failing config.
    """
    if isinstance(cfg, type) or not dataclasses.is_dataclass(cfg):
        raise TypeError(f"build() takes a config instance, got {cfg!r}")
    builder = builder_for(type(cfg))
    stack = (*_BUILD_STACK.get(), cfg)
    token = _BUILD_STACK.set(stack)
    try:
        return builder(cfg, **context)
    except Exception as error:
        if not getattr(error, "_detfn_build_noted", False):
            _add_note(error, f"detfn.build: raised while building {_path_of(stack)}")
            error._detfn_build_noted = True  # type: ignore[attr-defined]
        raise
    finally:
        _BUILD_STACK.reset(token)


def _path_of(stack: tuple[Any, ...]) -> str:
    """Dotted path of the innermost config: root type name, then the field names leading to it."""
    parts = [type(stack[0]).__name__]
    for parent, child in zip(stack, stack[1:]):
        parts.append(_field_holding(parent, child) or f"<{type(child).__name__}>")
    leaf = type(stack[-1]).__name__
    return ".".join(parts) + (f" ({leaf})" if len(stack) > 1 else "")


def _field_holding(parent: Any, child: Any) -> str | None:
    """Name of the field (or ``field[i]`` tuple item) of ``parent`` that is ``child``."""
    if not dataclasses.is_dataclass(parent):
        return None
    for field in dataclasses.fields(parent):
        value = getattr(parent, field.name, None)
        if value is child:
            return field.name
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                if item is child:
                    return f"{field.name}[{i}]"
    return None


def _add_note(error: BaseException, note: str) -> None:
    """``BaseException.add_note`` on 3.11+, the same attribute by hand on 3.10."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
