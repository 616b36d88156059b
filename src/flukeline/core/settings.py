"""Typed stage settings (`StageSettings`): one frozen dataclass per step of a stage, whose fields
are the only home of that step's defaults (LightGlue's one `default_conf`, pytorch-metric-learning's
constructor defaults), built from a config section and handed to the step's runner.

- `Settings.pick(section)` is what a rule passes as its params: exactly the keys the step consumes
  (nested settings picked recursively), so an edit to any other key never reruns it.
- `Settings.from_dict(values)` builds the object: unknown keys are refused with their config path,
  nested sections become their own settings, lists become tuples (the object is frozen).
- `settings.to_dict()` gives the plain values back (JSON, weights-file descriptions).

The schema (workflow/schemas/config.schema.yaml) repeats the defaults so that Snakemake's validate
fills a workflow's config; tests/unit/test_settings_defaults.py checks that every default the
schema states equals the field's. Standard library only: the Snakefile imports these at parse time.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from flukeline.core.errors import InputError

S = TypeVar("S", bound="StageSettings")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageSettings:
    """Base of every stage's settings; `section` names the config path in messages."""

    section: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def pick(cls, section: Mapping[str, Any]) -> dict[str, Any]:
        """The keys of `section` this step consumes (nested sections picked by their own class)."""
        picked = {}
        nested = _nested_types(cls)
        for key in cls.keys():
            if key not in section:
                continue
            value = section[key]
            if key in nested and isinstance(value, Mapping):
                value = nested[key].pick(value)
            picked[key] = value
        return picked

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any] | None = None, **overrides: Any) -> S:
        """The settings of a config section (missing keys take the fields' defaults)."""
        values = {**(values or {}), **overrides}
        known = cls.keys()
        unknown = sorted(set(values) - set(known))
        if unknown:
            where = f"{cls.section}: " if cls.section else ""
            raise InputError(f"{where}unknown setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
        nested = _nested_types(cls)
        kwargs = {}
        for key, value in values.items():
            if key in nested and not isinstance(value, nested[key]):
                value = nested[key].from_dict(value)
            kwargs[key] = _frozen(value)
        try:
            return cls(**kwargs)
        except TypeError as error:  # a required field without a value
            raise InputError(f"{cls.section or cls.__name__}: {error}") from None

    @classmethod
    def of(cls: type[S], value: StageSettings | Mapping[str, Any], *, only_own_keys: bool = False) -> S:
        """`value` itself when it already is these settings, else parsed from a mapping (a rule's
        params, a model's stored description, a library caller's dict); `only_own_keys` drops the
        keys of other steps that such a dict may also hold, instead of refusing them."""
        if isinstance(value, cls):
            return value
        return cls.from_dict(cls.pick(value) if only_own_keys else value)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples back to lists), as a config section would hold them."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **{k: _frozen(v) for k, v in changes.items()})


@functools.cache
def _nested_types(cls: type) -> dict[str, type[StageSettings]]:
    """Fields whose type is itself a settings class (resolved from the string annotations)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], StageSettings)
    }


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, StageSettings):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def nested_default(cls: type[S]) -> S:
    """`field(default_factory=...)` of a nested section: its class's own defaults."""
    return dataclasses.field(default_factory=cls)
