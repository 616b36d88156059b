"""Cross-validation folds for identification: every validation image must stay identifiable.

Fold index per training image, or -1 for images that are always in the training side:
- an identity with >= 2 images is spread round-robin over distinct folds, so for every fold at
  least one of its images lies outside it (a validation image always has a gallery match);
- an identity with a single image is always training (-1): held out, it would be unidentifiable
  by construction and only measure the new_whale decision with a wrong truth;
- new_whale images are spread evenly over the folds; their truth is new_whale.

With `units` (ingest passes the duplicate groups when data.group_duplicate_ids or
data.group_new_whale_duplicates is on), the rows of one unit of one identity move together: copies
of one photo share a fold, so a validation image is never answered by its own copy in the gallery.
An identity is then spread unit by unit, and one whose images are all one unit counts as a
single-image identity (always training): its only "other sighting" would be a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE

ALWAYS_TRAIN = -1


def assign_folds(
    ids: Sequence[str], n_folds: int, seed: int, units: Sequence[object | None] | None = None
) -> np.ndarray:
    """Fold index (int64, -1 = always training) for each image, given the images' identities.

    Deterministic for a given `ids` sequence and `seed`. Identities are visited in random order and
    each starts filling the currently smallest folds, which keeps fold sizes within a few images
    of each other; new_whale images are dealt round-robin from a random fold (sizes differ by <= 1).
    units: optional key per image (None: the image alone); images of one identity with the same key
    get the same fold. Without units (or with all None) the folds are exactly those without them.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if units is not None and len(units) != len(ids):
        raise ValueError(f"{len(units)} units for {len(ids)} images")
    if units is not None and any(unit is not None for unit in units):
        # Fold sizes then count units, not images: still balanced, as copies are few.
        return _assign_unit_folds(list(ids), list(units), n_folds, seed)
    rng = np.random.default_rng(seed)
    labels = pd.Series(list(ids), dtype=object)
    folds = np.full(len(labels), ALWAYS_TRAIN, dtype=np.int64)

    members_by_id = labels.groupby(labels, sort=True).indices  # sorted keys: seed-stable order
    known = {label: rows for label, rows in members_by_id.items() if label != NEW_WHALE}
    fold_sizes = np.zeros(n_folds, dtype=np.int64)
    labels_in_order = sorted(known)
    for position in rng.permutation(len(labels_in_order)):
        rows = known[labels_in_order[position]]
        if len(rows) < 2:
            continue
        # Smallest folds first, ties broken at random; image j goes to the (j mod n)-th of them.
        fold_order = np.lexsort((rng.random(n_folds), fold_sizes))
        targets = fold_order[np.arange(len(rows)) % n_folds]
        folds[rng.permutation(rows)] = targets
        fold_sizes += np.bincount(targets, minlength=n_folds)

    new_whale_rows = members_by_id.get(NEW_WHALE, np.empty(0, dtype=np.int64))
    start = rng.integers(n_folds)
    folds[rng.permutation(new_whale_rows)] = (start + np.arange(len(new_whale_rows))) % n_folds
    return folds


def _assign_unit_folds(ids: list[str], units: list, n_folds: int, seed: int) -> np.ndarray:
    """assign_folds over units: each unit (one identity's images sharing a key, or one image) is
    dealt as one image would be, and its fold given to all its images."""
    first_row: dict[tuple, int] = {}
    unit_of_row = np.empty(len(ids), dtype=np.int64)
    unit_ids: list[str] = []
    for row, (label, unit) in enumerate(zip(ids, units)):
        key = (label, ("unit", unit)) if unit is not None else (label, ("row", row))
        if key not in first_row:
            first_row[key] = len(unit_ids)
            unit_ids.append(label)
        unit_of_row[row] = first_row[key]
    return assign_folds(unit_ids, n_folds, seed)[unit_of_row]


def validation_truth(train_df: pd.DataFrame, fold: int) -> pd.Series:
    """The label a matcher must predict for each image of `fold` (Series indexed by image name).

    It is the image's id if that id has at least one image outside the fold (its gallery match),
    else new_whale. Needs columns image, id, fold.
    """
    in_fold = train_df["fold"].to_numpy() == fold
    ids_outside = set(train_df.loc[~in_fold, "id"])
    fold_rows = train_df.loc[in_fold]
    truth = [label if label != NEW_WHALE and label in ids_outside else NEW_WHALE for label in fold_rows["id"]]
    return pd.Series(truth, index=pd.Index(fold_rows["image"], name="image"), name="truth")
