"""Duplicate photos across train and test, found during ingest, and what they mean for the labels.

Two photos are exact duplicates when their bytes are identical (the sha1 ingest computes) and near
duplicates when their perceptual hashes (imagehash.phash, 256 bits, computed from the decode ingest
does anyway) differ in at most NEAR_DUPLICATE_MAX_DISTANCE bits: a re-encoded, resized, greyed or
slightly brightened copy. Cropped or mirrored copies are not found (phash is not crop-invariant).
Duplicates link into groups (connected components, so a group may chain A~B~C).

Reported by ingest: every group in results/data/duplicates.csv (DUPLICATE_COLUMNS, one row per
photo), a group whose training photos carry several known ids (conflicting labels: the Kaggle data
had one whale under two ids) and a test photo in a group with training photos (a train/test leak).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from flukeline.core.metrics import NEW_WHALE

logger = logging.getLogger(__name__)

# 16x16 = 256 bits. The imagehash default (8x8 = 64 bits) is too coarse for photos of one kind:
# on the demo flukes and on Omniglot, distinct photos came within 4 of 64 bits of each other, while
# with 256 bits they stay >= 62 (demo) and >= 46 (Omniglot) apart and re-encoded (JPEG q60), resized
# (0.7x, 2x), brightened (1.15x: saturated pixels clip) or greyed copies stay within 20.
PHASH_SIZE = 16
NEAR_DUPLICATE_MAX_DISTANCE = 24  # bits of 256: above every copy measured, well below distinct photos

# Grey-level spread (of 255) of the hash thumbnail below which a photo is flat (blank, over-exposed,
# one colour): all flat photos hash alike, so they are matched by their bytes only.
MIN_HASH_CONTRAST = 2.0

DUPLICATE_COLUMNS = ["group", "split", "image", "id", "kind", "distance"]

# Conflicts and leaks are named one per line; a catalogue with many only lists the first ones.
MAX_LOGGED_GROUPS = 20


def perceptual_hash(rgb: np.ndarray) -> bytes | None:
    """The 256-bit phash of an HxWx3 uint8 image as 32 bytes, or None for a flat photo."""
    import imagehash  # on first use: it pulls in scipy (about half a second)

    side = PHASH_SIZE * 4  # phash's own thumbnail size (highfreq_factor 4)
    # reducing_gap: a box reduction first, then Lanczos on the last factor 2; 3 ms instead of 11 ms
    # on a 1050x700 photo (a Kaggle photo's size), whose decode takes ~10 ms.
    thumbnail = Image.fromarray(rgb).convert("L").resize((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if float(np.asarray(thumbnail).std()) < MIN_HASH_CONTRAST:
        return None
    bits = imagehash.phash(thumbnail, hash_size=PHASH_SIZE).hash
    return np.packbits(bits).tobytes()


@dataclass(frozen=True)
class Photo:
    """One kept image as the duplicate search sees it."""

    split: str
    image: str
    id: str | None  # None for a test photo
    where: str  # "train.csv line 5", "test folder"
    sha1: str
    phash: bytes | None  # None: flat, or not hashed


@dataclass(frozen=True)
class Group:
    number: int  # from 1, in order of the groups' first photos
    members: tuple[int, ...]  # indexes into the photos, in their order (train.csv, then test)
    kind: str  # "exact": every photo has the same bytes; "near" otherwise


def find_groups(photos: Sequence[Photo], threads: int = 1) -> list[Group]:
    """Groups of two or more photos linked by identical bytes or near perceptual hashes."""
    parent = list(range(len(photos)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def link(a: int, b: int) -> None:
        parent[max(root(a), root(b))] = min(root(a), root(b))  # the earliest photo leads the group

    first_with_bytes = {}
    for index, photo in enumerate(photos):
        link(index, first_with_bytes.setdefault(photo.sha1, index))
    for a, b in _near_pairs(photos, threads):
        link(a, b)
    members = defaultdict(list)
    for index in range(len(photos)):
        members[root(index)].append(index)
    linked = [tuple(group) for group in members.values() if len(group) > 1]
    linked.sort(key=lambda group: group[0])
    return [
        Group(number, group, "exact" if len({photos[i].sha1 for i in group}) == 1 else "near")
        for number, group in enumerate(linked, start=1)
    ]


def _near_pairs(photos: Sequence[Photo], threads: int) -> list[tuple[int, int]]:
    """Index pairs (a < b) whose hashes differ in at most NEAR_DUPLICATE_MAX_DISTANCE bits.

    faiss (already a dependency) does the all-pairs Hamming search: 1.9 s for 33,000 photos (the
    size of the Kaggle data) where numpy took 52 s."""
    hashed = [index for index, photo in enumerate(photos) if photo.phash is not None]
    if len(hashed) < 2:
        return []
    import faiss

    from flukeline.core.runtime import worker_count

    codes = np.frombuffer(b"".join(photos[i].phash for i in hashed), dtype=np.uint8).reshape(len(hashed), -1)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    threads_before = faiss.omp_get_max_threads()  # a process-wide setting: put back after the search
    faiss.omp_set_num_threads(worker_count(threads))
    try:
        limits, _, neighbours = index.range_search(codes, NEAR_DUPLICATE_MAX_DISTANCE + 1)  # radius is exclusive
    finally:
        faiss.omp_set_num_threads(threads_before)
    pairs = []
    for query in range(len(hashed)):
        for neighbour in neighbours[limits[query] : limits[query + 1]]:
            if query < neighbour:
                pairs.append((hashed[query], hashed[int(neighbour)]))
    return pairs


def hash_distance(a: bytes | None, b: bytes | None) -> int | None:
    if a is None or b is None:
        return None
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def duplicates_table(photos: Sequence[Photo], groups: Sequence[Group]) -> pd.DataFrame:
    """One row per photo in a group: kind "exact" when another photo of the group has its bytes,
    "near" otherwise; distance: differing hash bits from the group's first photo (0 for its bytes)."""
    rows = []
    for group in groups:
        first = photos[group.members[0]]
        byte_counts = pd.Series([photos[i].sha1 for i in group.members]).value_counts()
        for i in group.members:
            photo = photos[i]
            # Never None: a photo without a hash (flat) is linked only to copies of its own bytes.
            distance = 0 if photo.sha1 == first.sha1 else hash_distance(photo.phash, first.phash)
            kind = "exact" if byte_counts[photo.sha1] > 1 else "near"
            rows.append((group.number, photo.split, photo.image, photo.id or "", kind, distance))
    table = pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)
    return table.astype({"group": "int64", "distance": "int64"})


def conflicting_ids(photos: Sequence[Photo], group: Group) -> list[str]:
    """The known ids (not new_whale) of the group's training photos, when there are several."""
    training = [photos[i] for i in group.members if photos[i].split == "train"]
    known = sorted({photo.id for photo in training if photo.id != NEW_WHALE})
    return known if len(known) > 1 else []


def leaked_test_photos(photos: Sequence[Photo], group: Group) -> list[int]:
    """The group's test photos, when the group also holds a training photo."""
    tests = [i for i in group.members if photos[i].split == "test"]
    return tests if len(tests) < len(group.members) else []


def conflict_message(photos: Sequence[Photo], group: Group) -> str:
    training = [photos[i] for i in group.members if photos[i].split == "train"]
    listing = ", ".join(f"{photo.where} {photo.image!r} Id {photo.id!r}" for photo in training)
    n_ids = len(conflicting_ids(photos, group))
    return f"duplicate group {group.number} ({group.kind}): one photo under {n_ids} known ids: {listing}"


def leak_message(photos: Sequence[Photo], group: Group, test_index: int) -> str:
    training = [photos[i] for i in group.members if photos[i].split == "train"]
    listing = ", ".join(f"{photo.image!r} (Id {photo.id!r})" for photo in training)
    test_image = photos[test_index].image
    return f"duplicate group {group.number} ({group.kind}): test image {test_image!r} duplicates training {listing}"


def report_groups(photos: Sequence[Photo], groups: Sequence[Group], out_path) -> dict:
    """Log the groups (a summary line, then each conflict and leak) and return their summary counts."""
    conflicts = [group for group in groups if conflicting_ids(photos, group)]
    leaks = [(group, i) for group in groups for i in leaked_test_photos(photos, group)]
    summary = {
        "n_duplicate_groups": len(groups),
        "n_duplicate_images": sum(len(group.members) for group in groups),
        "n_exact_duplicate_groups": sum(group.kind == "exact" for group in groups),
        "n_near_duplicate_groups": sum(group.kind == "near" for group in groups),
        "n_conflicting_id_groups": len(conflicts),
        "n_leaked_test_images": len(leaks),
    }
    if not groups:
        logger.info("no duplicate images found (exact or near) across train and test")
        return summary
    logger.warning(
        "%d duplicate group(s) of %d image(s) across train and test (%d exact, %d near): %d with conflicting"
        " known ids, %d test image(s) duplicating training images; see %s",
        len(groups),
        summary["n_duplicate_images"],
        summary["n_exact_duplicate_groups"],
        summary["n_near_duplicate_groups"],
        len(conflicts),
        len(leaks),
        out_path,
    )
    messages = [conflict_message(photos, group) for group in conflicts]
    messages += [leak_message(photos, group, i) for group, i in leaks]
    for message in messages[:MAX_LOGGED_GROUPS]:
        logger.warning("%s", message)
    if len(messages) > MAX_LOGGED_GROUPS:
        logger.warning("... and %d more conflict(s) and leak(s); see %s", len(messages) - MAX_LOGGED_GROUPS, out_path)
    return summary
