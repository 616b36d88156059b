"""The registry itself (timm's register_model pattern): member-type classes by name. Kept apart
from the package's __init__, which imports every built-in type, so that no type module imports
the module that imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flukeline.core.errors import InputError

if TYPE_CHECKING:
    from flukeline.embed.member_types.base import MemberType

_TYPES: dict[str, type[MemberType]] = {}


def register_member_type(name: str):
    """Class decorator: the member type `name` (the value of a member's `type` setting)."""

    def register(cls):
        if name in _TYPES and _TYPES[name] is not cls:
            raise ValueError(f"member type {name!r} is registered twice ({_TYPES[name].__name__}, {cls.__name__})")
        cls.name = name
        _TYPES[name] = cls
        return cls

    return register


def member_type_names() -> list[str]:
    return sorted(_TYPES)


def member_type(name: str) -> MemberType:
    """The registered member type `name`; an unknown name is an InputError listing the known ones."""
    try:
        return _TYPES[name]()
    except KeyError:
        raise InputError(
            f"embed member type {name!r} is not registered (known: {', '.join(member_type_names())})"
        ) from None
