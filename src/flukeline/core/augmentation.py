"""Training augmentation built from config.yaml by albumentations class name (`embed.augmentation`,
for the embedding members).

config: a list of `{transform: <albumentations class>, p: <probability>, <its arguments>...}`;
`OneOf` / `SomeOf` / `Sequential` entries hold their own `transforms:` list. albumentations
validates the arguments, and any error is reported with the list position so a typo in
config.yaml names its entry. Geometric transforms also move the mask (4th channel); pixel-level
ones leave it alone.
"""

from __future__ import annotations

import albumentations as A

from flukeline.core.errors import InputError


def build_augmentation(entries: list[dict], seed: int, where: str = "embed.augmentation") -> A.Compose:
    return A.Compose(_build_transforms(entries, where), seed=seed)


def _build_transforms(entries: list[dict], where: str) -> list:
    """`OneOf`/`SomeOf`/`Sequential` entries hold their own `transforms:` list."""
    transforms = []
    for position, entry in enumerate(entries or []):
        entry = dict(entry)
        name = entry.pop("transform", None)
        transform_class = getattr(A, str(name), None)
        if not isinstance(transform_class, type) or not issubclass(transform_class, (A.BasicTransform, A.BaseCompose)):
            raise InputError(f"config {where}[{position}]: {name!r} is not an albumentations transform")
        children = entry.pop("transforms", None)
        # YAML has lists only; albumentations ranges are tuples.
        arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        if issubclass(transform_class, A.BaseCompose):
            arguments["transforms"] = _build_transforms(children or [], f"{where}[{position}].transforms")
        try:
            transforms.append(transform_class(**arguments))
        except Exception as error:  # albumentations raises pydantic/Type/ValueErrors
            raise InputError(f"config {where}[{position}] ({name}): {error}") from error
    return transforms
