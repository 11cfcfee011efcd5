"""Typed settings with ranges: a dataclass says each setting's type, default and allowed values.

``settings_from(Settings, values, "method.settings")`` builds the dataclass from a plain dict and refuses, in
one line naming the key, an unknown setting (with a "did you mean"), a value of the wrong type, a choice
outside its ``Enum`` or a number outside its range. A range is a field's metadata::

    @dataclass(frozen=True)
    class Settings:
        gamma: float = field(default=2.0, metadata=at_least(0))
        fraction: float = field(default=0.5, metadata=between(0, 1))

Torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from enum import Enum
from types import UnionType
from typing import Any

from lst.errors import ConfigError

RANGE = "range"  # a field's metadata key: (low, high, low open, high open), None for no bound


def at_least(low: float) -> dict[str, Any]:
    return {RANGE: (low, None, False, False)}


def above(low: float) -> dict[str, Any]:
    return {RANGE: (low, None, True, False)}


def between(low: float, high: float) -> dict[str, Any]:
    return {RANGE: (low, high, False, False)}


def range_text(bounds: tuple) -> str:
    """A range in words: ``>= 0``, ``> 0``, ``in [0, 1]``."""
    low, high, low_open, high_open = bounds
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def in_range(value: float, bounds: tuple) -> bool:
    low, high, low_open, high_open = bounds
    above_low = low is None or (value > low if low_open else value >= low)
    below_high = high is None or (value < high if high_open else value <= high)
    return above_low and below_high


def check_range(key: str, value: Any, bounds: tuple | None) -> None:
    """``key``'s number ``value`` within ``bounds`` (a field's RANGE), else one line naming the key."""
    if bounds is not None and isinstance(value, int | float) and not in_range(value, bounds):
        raise ConfigError(f"{key}: {value} is out of range (allowed: {range_text(bounds)})")


def settings_from(cls: type, values: Mapping[str, Any] | None, key: str) -> Any:
    """The ``cls`` dataclass from ``values`` (the settings under config key ``key``), each checked."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in values if name not in fields]
    if unknown:
        name = str(unknown[0])
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"did you mean {close[0]}?" if close else f"its settings: {', '.join(fields)}" if fields else "none"
        raise ConfigError(f"{key}.{name}: not a setting of {cls.__qualname__} ({hint})")
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        checked[name] = _typed(f"{key}.{name}", value, hints[name])
        check_range(f"{key}.{name}", checked[name], fields[name].metadata.get(RANGE))
    return cls(**checked)


def _typed(key: str, value: Any, kind: Any) -> Any:
    """``value`` as type ``kind`` (bool, int, float, str, an Enum, an optional of one; else as it is)."""
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(option for option in options if option is not type(None))
    if isinstance(kind, type) and issubclass(kind, Enum):
        names = [member.name for member in kind]
        if value not in names:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(names)}")
        return kind[value]
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(kind)
    if expected is None:
        return value
    if not isinstance(value, expected) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: {value!r} is not a {kind.__name__}")
    return float(value) if kind is float else value


def check_ranges(values: Mapping[str, Any], cls: type, prefix: str = "") -> None:
    """Each number of ``values`` (a composed config) within the range of its field of the dataclass ``cls``,
    nested dataclasses and each element of a list included; else one line naming the key."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        key, value = f"{prefix}{item.name}", values.get(item.name)
        if dataclasses.is_dataclass(hints[item.name]) and isinstance(value, Mapping):
            check_ranges(value, hints[item.name], f"{key}.")
        elif isinstance(value, list):
            for index, element in enumerate(value):
                check_range(f"{key}[{index}]", element, item.metadata.get(RANGE))
        else:
            check_range(key, value, item.metadata.get(RANGE))
