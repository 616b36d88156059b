"""Training identities from the duplicate groups (flukeline.data.duplicates), decided at ingest
before the folds are dealt.

data.group_duplicate_ids: a duplicate group whose training photos carry several known ids is one
animal under several names (the Kaggle data had such photos); its ids are merged into one training
identity, "<id>+<id>..." (sorted; transitively: groups sharing an id merge too). This is the 3rd
place Kaggle solution's class grouping: the embedding then learns one class, not two classes whose
photos look the same. data.group_new_whale_duplicates: new_whale training photos that duplicate each
other are one unknown animal; they become one training identity "new_whale~group<N>" (N: the
duplicate group), which the submission reads back as new_whale. A group that mixes new_whale and
known-id photos is left as it is (a new_whale photo of a known animal: named in the log).

Training uses these ids (train.parquet `id`; the user's own in `original_id`), and the submission
speaks the user's ids again through the table written as results/data/id_groups.csv
(ID_GROUP_COLUMNS: one row per original id of each merged or synthetic training id, with its
training photo count, the duplicate groups that caused it and the reason).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.csv_rows import read_ingest_table
from flukeline.data.duplicates import MAX_LOGGED_GROUPS, Group, Photo, conflicting_ids

logger = logging.getLogger("flukeline.data.ingest")  # read as ingest's own messages

ID_GROUP_COLUMNS = ["training_id", "original_id", "n_images", "groups", "reason"]
CONFLICTING_IDS = "conflicting_ids"  # reason: known ids of one duplicate group, merged
NEW_WHALE_DUPLICATES = "new_whale_duplicates"  # reason: new_whale duplicates, one synthetic id
MERGED_SEPARATOR = "+"  # ids are one word (data.id_checks): "+" keeps a merged id one word too
NEW_WHALE_GROUP_PREFIX = f"{NEW_WHALE}~group"


@dataclass
class IdGrouping:
    training_ids: list[str]  # per training photo, in the photos' order
    units: list[int | None] | None  # duplicate group per training photo (fold units); None: grouping off
    table: pd.DataFrame  # ID_GROUP_COLUMNS
    summary: dict


def group_ids(
    photos: Sequence[Photo], groups: Sequence[Group], *, merge_known: bool = False, group_new_whale: bool = False
) -> IdGrouping:
    """The training id of every training photo (the photos' own ids when both options are off)."""
    train_rows = [i for i, photo in enumerate(photos) if photo.split == "train"]
    original = {i: photos[i].id for i in train_rows}
    images_per_id = pd.Series(list(original.values()), dtype=object).value_counts().to_dict()
    taken = set(images_per_id)
    training = dict(original)
    rows = []

    if merge_known:
        for originals, numbers in _merged_components(photos, groups):
            name = _unique(MERGED_SEPARATOR.join(originals), taken)
            for i in train_rows:
                if original[i] in originals:
                    training[i] = name
            listing = " ".join(map(str, numbers))
            rows += [(name, label, images_per_id[label], listing, CONFLICTING_IDS) for label in originals]

    mixed = []
    if group_new_whale:
        for group in groups:
            members = [i for i in group.members if photos[i].split == "train"]
            new = [i for i in members if photos[i].id == NEW_WHALE]
            known = sorted({photos[i].id for i in members} - {NEW_WHALE})
            if len(new) < 2 and not (new and known):
                continue
            if known:
                # Probably a known animal labelled new_whale once: a class of its own would teach the
                # embedding to tell the animal from itself, so the photos stay new_whale.
                mixed.append((group, new, known))
                continue
            name = _unique(f"{NEW_WHALE_GROUP_PREFIX}{group.number}", taken)
            for i in new:
                training[i] = name
            rows.append((name, NEW_WHALE, len(new), str(group.number), NEW_WHALE_DUPLICATES))

    table = pd.DataFrame(rows, columns=ID_GROUP_COLUMNS).astype({"n_images": "int64"})
    summary = {
        "n_merged_training_ids": int(table.loc[table["reason"] == CONFLICTING_IDS, "training_id"].nunique()),
        "n_merged_original_ids": int((table["reason"] == CONFLICTING_IDS).sum()),
        "n_new_whale_training_ids": int((table["reason"] == NEW_WHALE_DUPLICATES).sum()),
        "n_new_whale_images_grouped": int(table.loc[table["reason"] == NEW_WHALE_DUPLICATES, "n_images"].sum()),
    }
    _log(table, mixed, photos)
    units = None
    if merge_known or group_new_whale:
        group_of = {i: group.number for group in groups for i in group.members}
        units = [group_of.get(i) for i in train_rows]
    return IdGrouping([training[i] for i in train_rows], units, table, summary)


def _merged_components(photos: Sequence[Photo], groups: Sequence[Group]) -> list[tuple[list[str], list[int]]]:
    """(sorted original ids, sorted group numbers) of each set of known ids linked by conflicting groups."""
    parent: dict[str, str] = {}

    def root(label: str) -> str:
        while parent.setdefault(label, label) != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    numbers_of: dict[str, list[int]] = defaultdict(list)
    for group in groups:
        labels = conflicting_ids(photos, group)
        for label in labels[1:]:
            parent[root(label)] = root(labels[0])
        for label in labels:
            numbers_of[label].append(group.number)
    members = defaultdict(set)
    for label in numbers_of:
        members[root(label)].add(label)
    components = [
        (sorted(labels), sorted({n for label in labels for n in numbers_of[label]})) for labels in members.values()
    ]
    return sorted(components, key=lambda component: component[1][0])


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name~2`, `name~3`... when a user's id (or an earlier training id) already has it."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}~{n}"
    taken.add(candidate)
    return candidate


def _log(table: pd.DataFrame, mixed: list, photos: Sequence[Photo]) -> None:
    merged = table[table["reason"] == CONFLICTING_IDS]
    messages = []
    for name, rows in merged.groupby("training_id", sort=False):
        parts = ", ".join(f"{row.original_id!r} ({row.n_images} image(s))" for row in rows.itertuples())
        messages.append(f"training id {name!r} merges {parts} (duplicate group(s) {rows['groups'].iloc[0]})")
    for row in table[table["reason"] == NEW_WHALE_DUPLICATES].itertuples():
        messages.append(
            f"training id {row.training_id!r}: {row.n_images} new_whale photos of duplicate group {row.groups}"
        )
    if messages:
        logger.info(
            "training identities from duplicate photos: %d merged from %d ids, %d from new_whale duplicates;"
            " the submission lists the original ids",
            merged["training_id"].nunique(),
            len(merged),
            int((table["reason"] == NEW_WHALE_DUPLICATES).sum()),
        )
    for message in messages[:MAX_LOGGED_GROUPS]:
        logger.info("%s", message)
    if len(messages) > MAX_LOGGED_GROUPS:
        logger.info("... and %d more training identities from duplicates", len(messages) - MAX_LOGGED_GROUPS)
    for group, new, known in mixed[:MAX_LOGGED_GROUPS]:
        listing = ", ".join(repr(photos[i].image) for i in new)
        logger.warning(
            "duplicate group %d: new_whale photo(s) %s duplicate photos of known id(s) %s; kept as new_whale",
            group.number,
            listing,
            ", ".join(map(repr, known)),
        )
    if len(mixed) > MAX_LOGGED_GROUPS:
        logger.warning("... and %d more groups mixing new_whale and known ids", len(mixed) - MAX_LOGGED_GROUPS)


@dataclass(frozen=True)
class OriginalIds:
    """What the submission needs from id_groups.csv: training id -> its original ids."""

    merged: dict[str, list[tuple[str, int]]]  # training id -> [(original id, training photos)]
    new_whale: set[str]  # synthetic training ids that stand for new_whale

    def expand(self, training_id: str) -> list[str]:
        """The original ids of a training id, in table order (most photos first: see read_id_groups)."""
        if training_id in self.new_whale:
            return [NEW_WHALE]
        return [label for label, _ in self.merged.get(training_id, [(training_id, 0)])]


def read_id_groups(path: str | Path) -> OriginalIds:
    """Read id_groups.csv; an InputError names the file and the problem. Each merged training id's
    original ids come ordered by their training photo count (most first, ties by name): the order
    the submission falls back to when it has no per-photo evidence."""
    path = Path(path)
    table = read_ingest_table(path, ID_GROUP_COLUMNS, "id_groups.csv")
    counts = pd.to_numeric(table["n_images"], errors="coerce")
    bad = [str(n + 2) for n in range(len(table)) if not (counts.iloc[n] >= 1) or not table["training_id"].iloc[n]]
    if bad:
        raise InputError(f"{path} line(s) {', '.join(bad)}: need a training_id and an n_images >= 1")
    unknown = sorted(set(table["reason"]) - {CONFLICTING_IDS, NEW_WHALE_DUPLICATES})
    if unknown:
        raise InputError(f"{path}: unknown reason(s) {unknown} (known: {CONFLICTING_IDS}, {NEW_WHALE_DUPLICATES})")
    table = table.assign(n_images=counts.astype("int64"))
    merged = {}
    for name, rows in table[table["reason"] == CONFLICTING_IDS].groupby("training_id", sort=False):
        ordered = sorted(zip(rows["original_id"], rows["n_images"]), key=lambda item: (-item[1], item[0]))
        merged[name] = [(label, int(n)) for label, n in ordered]
    new_whale = set(table.loc[table["reason"] == NEW_WHALE_DUPLICATES, "training_id"])
    return OriginalIds(merged, new_whale)
