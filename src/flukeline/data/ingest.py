"""Ingest a Kaggle Humpback Whale Identification layout into validated per-image tables.

Layout under the data root: `train.csv` (Image,Id), `train/` and `test/` image folders, and
optionally `sample_submission.csv`, whose Image column fixes the test order.

Every per-image problem is collected before anything is decided, so one run reports them all
(`on_bad_image: error`) or drops and lists them (`skip`). CSV locations are given as
"<file> line N", N counting the header as line 1 (as editors do).

Ids are stripped of surrounding whitespace (logged); an Id that is empty, or holds a comma or
whitespace inside, is a bad row (the submission separates ids by spaces). Ids that differ only in
case, photos smaller than `min_image_side` (a bad row with `skip`), exact and near duplicates
(flukeline.data.duplicates), conflicting labels and train/test leaks are logged as warnings.
With group_duplicate_ids / group_new_whale_duplicates, the duplicate groups also decide the training
ids (flukeline.data.id_groups) before the folds are dealt, so the folds see the merged identities
and keep each group's copies in one fold. These data.* settings are `IngestSettings`
(flukeline.data.settings).

Written (the `ingest` rule puts them in results/data/): train.parquet (image, path, id, original_id,
width, height, grayscale, sha1, fold, split, mask_path; `id` is the training id, `original_id` the
train.csv Id), test.parquet (the same without the ids and fold), rejected.csv (split, image,
problem), duplicates.csv (beside it unless given; group, split, image, id, kind, distance),
id_groups.csv (beside it unless given; training_id, original_id, n_images, groups, reason) and,
beside the train table, keypoints.parquet and boxes.parquet from the annotations
(flukeline.data.annotations). The optional encounter, date, location, latitude, longitude and
viewpoint columns of train.csv, the catalogue, sample_submission.csv or test.csv become columns of
the image tables (flukeline.data.catalogue_rows, flukeline.data.metadata).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError, UnreadableImageError
from flukeline.core.folds import ALWAYS_TRAIN, assign_folds
from flukeline.core.images import PHOTO_SUFFIXES, decode_image_rgb, is_grayscale
from flukeline.core.io import write_csv_atomic, write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.photo_cache import PhotoCache, bytes_array
from flukeline.core.runtime import parallel_map
from flukeline.data.annotations import ANNOTATION_COLUMNS, _mask_paths, load_annotations
from flukeline.data.catalogue_rows import add_encounters, catalogue_entries, fold_units
from flukeline.data.csv_rows import csv_line, read_csv
from flukeline.data.duplicates import (
    MIN_HASH_CONTRAST,
    PHASH_SIZE,
    Photo,
    duplicates_table,
    find_groups,
    perceptual_hash,
    report_groups,
)
from flukeline.data.id_checks import id_problem, named_list, warn_ids_differing_in_case
from flukeline.data.id_groups import group_ids
from flukeline.data.metadata import TEST_METADATA, add_metadata, read_metadata, spellings
from flukeline.data.settings import IngestSettings

logger = logging.getLogger(__name__)


TEST_ORDERS = ("auto", "sample_submission", "sorted")

REJECTED_COLUMNS = ["split", "image", "problem"]


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    grayscale: bool
    sha1: str
    phash: bytes | None = None  # perceptual hash (flukeline.data.duplicates); None for a flat photo


@dataclass
class _Entry:
    """One listed image (a train.csv row or a test image) and everything found wrong with it."""

    split: str
    image: str
    where: str  # "train.csv line 18", "test folder", ...
    id: str | None = None
    path: Path | None = None  # resolved, set only when it is an existing file inside the split folder
    facts: ImageFacts | None = None
    problems: list[str] = field(default_factory=list)

    def describe_problems(self) -> str:
        return f"{self.where}: image {self.image!r} " + "; ".join(self.problems)


def ingest(
    root: str | os.PathLike,
    out_train: str | os.PathLike,
    out_test: str | os.PathLike,
    out_rejected: str | os.PathLike,
    settings: IngestSettings | Mapping[str, Any] | None = None,
    *,
    annotations: Mapping[str, str | os.PathLike | None] | None = None,
    seed: int = 0,
    threads: int = 1,
    test_order: str = "auto",
    out_duplicates: str | os.PathLike | None = None,
    out_id_groups: str | os.PathLike | None = None,
    catalogue: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Validate the data under `root` and write the train/test/rejected tables.

    settings: the data.* keys ingest consumes (`IngestSettings`, or a mapping of them such as the
    rule's params; None: the defaults). on_bad_image "error" raises one InputError listing every
    bad row, "skip" drops bad rows, records them in `out_rejected` (split,image,problem) and logs one
    warning; min_image_side, group_duplicate_ids, group_new_whale_duplicates and folds: see
    flukeline.data.settings.
    annotations: optional {"masks": folder of <stem>.png, "keypoints": CSV, "boxes": CSV}, each
    relative to `root` or absolute.
    test_order: "auto" (sample_submission.csv if present, else sorted test/ file names),
    "sample_submission" (required) or "sorted".
    out_duplicates: the duplicate groups' table; default duplicates.csv beside `out_rejected`.
    catalogue: a catalogue CSV (flukeline.data.catalogue_rows) whose rows are training rows too.
    out_id_groups: the training ids' table (flukeline.data.id_groups); default id_groups.csv beside
    `out_rejected`, written (empty) with both grouping settings off too.
    cache_dir: per-photo facts kept across runs by the photo's SHA-1 (flukeline.core.photo_cache):
    a photo seen before is read (for its hash) but not decoded again.
    Returns a JSON-safe summary dict.
    """
    settings = IngestSettings() if settings is None else IngestSettings.of(settings)
    _check_arguments(test_order, threads)
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(f"data root {root} does not exist or is not a folder")

    train_entries, test_entries = _list_entries(root, test_order, catalogue, settings.new_label)
    # Date, place and side (flukeline.data.metadata): checked before the long image decoding too.
    train_metadata = read_metadata([root / "train.csv", catalogue])
    test_metadata = read_metadata([root / "sample_submission.csv", root / TEST_METADATA])
    # Annotation mistakes are configuration errors: report them before the long image decoding.
    masks_dir, annotation_tables = load_annotations(
        root, annotations or {}, listed={entry.image for entry in train_entries + test_entries}
    )
    _inspect_and_flag(train_entries, test_entries, threads, settings, cache_dir)
    kept_train, kept_test, rejected = _kept_entries(
        root, train_entries, test_entries, settings.on_bad_image, settings.new_label
    )

    out_duplicates = Path(out_rejected).parent / "duplicates.csv" if out_duplicates is None else out_duplicates
    out_id_groups = Path(out_rejected).parent / "id_groups.csv" if out_id_groups is None else out_id_groups
    photos = [_photo(entry) for entry in kept_train + kept_test]
    groups = find_groups(photos, threads)
    duplicate_summary = report_groups(photos, groups, out_duplicates)  # logged before the grouping it leads to
    grouping = group_ids(
        photos, groups, merge_known=settings.group_duplicate_ids, group_new_whale=settings.group_new_whale_duplicates
    )
    train_df = _train_table(root, kept_train, grouping, catalogue, settings.folds, seed)
    test_df = add_encounters(_table(kept_test, "test"), [root / "sample_submission.csv", root / TEST_METADATA])
    train_df = add_metadata(train_df, train_metadata, "train")
    test_df = add_metadata(test_df, test_metadata, "test")

    summary = _summarise(train_df, test_df, len(rejected), settings.folds)
    summary.update(duplicate_summary)
    summary.update(grouping.summary)
    summary.update(_attach_annotations(train_df, test_df, masks_dir, annotation_tables))
    write_parquet_atomic(train_df, out_train)
    write_parquet_atomic(test_df, out_test)
    _write_annotation_tables(annotation_tables, Path(out_train).parent)
    write_csv_atomic(_rejected_table(rejected), out_rejected)
    write_csv_atomic(duplicates_table(photos, groups), out_duplicates)
    write_csv_atomic(grouping.table, out_id_groups)
    if rejected:
        logger.warning("skipped %d bad image row(s); see %s", len(rejected), out_rejected)
    logger.info("ingested %d training and %d test images from %s", len(train_df), len(test_df), root)
    return summary


def _check_arguments(test_order: str, threads: int) -> None:
    if test_order not in TEST_ORDERS:
        raise InputError(f"test_order must be one of {TEST_ORDERS}, got {test_order!r}")
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")


def _list_entries(root: Path, test_order: str, catalogue, new_label: str) -> tuple[list[_Entry], list[_Entry]]:
    """(train rows: train.csv's, then the catalogue's; test rows), each with its listing problems."""
    train_entries = _list_train(root, new_label)
    listed = {entry.image: entry.where for entry in train_entries}
    train_entries += catalogue_entries(catalogue, listed, lambda **row: _Entry(split="train", **row))
    return train_entries, _list_test(root, test_order)


def _inspect_and_flag(
    train_entries: list, test_entries: list, threads: int, settings: IngestSettings, cache_dir=None
) -> None:
    """Every image decoded and its problems recorded on its entry, so that one run reports them all."""
    _flag_images_in_both_splits(train_entries, test_entries)
    _inspect_images(train_entries + test_entries, threads, cache_dir)
    as_problem = settings.on_bad_image == "skip"
    _flag_small_images(train_entries + test_entries, settings.min_image_side, as_problem=as_problem)


def _train_table(root: Path, kept_train: list, grouping, catalogue, n_folds: int, seed: int) -> pd.DataFrame:
    """The train table with its training and original ids, encounters and folds."""
    train_df = _table(kept_train, "train")
    train_df.insert(2, "id", grouping.training_ids)
    train_df.insert(3, "original_id", [entry.id for entry in kept_train])
    # The optional encounter column (same animal, same day) of the input CSVs.
    train_df = add_encounters(train_df, [root / "train.csv", catalogue])
    # The training ids come before the folds: assign_folds must deal a merged identity as one, and
    # (units) keep the copies of one photo in one fold, or validation would match a photo to its copy.
    folds = assign_folds(grouping.training_ids, n_folds, seed, units=fold_units(train_df, grouping.units))
    train_df.insert(train_df.columns.get_loc("split"), "fold", folds)
    return train_df


def _write_annotation_tables(annotation_tables: dict, folder: Path) -> None:
    # Written even without annotations (empty, typed): detect reads one schema either way.
    for kind, columns in ANNOTATION_COLUMNS.items():
        table = annotation_tables.get(kind, pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()}))
        write_parquet_atomic(table, folder / f"{kind}.parquet")


def _kept_entries(root: Path, train_entries: list, test_entries: list, on_bad_image: str, new_label: str = NEW_WHALE):
    """(usable train rows, usable test rows, rejected rows) under the bad-image policy; an error
    when a policy of "error" meets a bad row, or when too little is left to match."""
    rejected = [entry for entry in train_entries + test_entries if entry.problems]
    if rejected and on_bad_image == "error":
        raise InputError(
            f"{len(rejected)} bad image row(s) under {root} (set on_bad_image to 'skip' to drop them):\n"
            + "\n".join(entry.describe_problems() for entry in rejected)
        )
    kept_train = [entry for entry in train_entries if not entry.problems]
    kept_test = [entry for entry in test_entries if not entry.problems]
    if not kept_train:
        raise InputError(f"no usable training images left in {root / 'train.csv'}" + _listing(rejected))
    if not kept_test:
        raise InputError(f"no usable test images left under {root / 'test'}" + _listing(rejected))
    if all(entry.id == NEW_WHALE for entry in kept_train):
        # Matching ranks known identities; with none, every prediction could only be new_whale.
        raise InputError(
            f"{root / 'train.csv'}: all {len(kept_train)} usable training row(s) have Id {new_label!r}"
            + ("" if new_label == NEW_WHALE else f" (or {NEW_WHALE!r})")
            + ";"
            " at least one known identity is needed to match against"
        )
    return kept_train, kept_test, rejected


def _attach_annotations(train_df, test_df, masks_dir, annotation_tables: dict) -> dict:
    """Annotation rows of the kept photos only (in place), and each photo's mask path (or a null
    column: downstream stages read one schema whether or not annotations exist); their counts."""
    counts = {}
    kept = set(train_df["image"]) | set(test_df["image"])
    for kind, table in annotation_tables.items():
        annotation_tables[kind] = table[table["image"].isin(kept)].reset_index(drop=True)
        counts[f"n_{kind}"] = len(annotation_tables[kind])
    if masks_dir is not None:
        for df in (train_df, test_df):
            df["mask_path"] = _mask_paths(masks_dir, df["image"])
        counts["n_masks"] = int(train_df["mask_path"].notna().sum() + test_df["mask_path"].notna().sum())
    else:
        for df in (train_df, test_df):
            df["mask_path"] = pd.Series([None] * len(df), dtype="string")
    return counts


def _locate(folder: Path, name: str) -> tuple[Path | None, str | None]:
    """Resolve an image name inside `folder` (already resolved): (path, None) or (None, problem)."""
    if not name.strip():
        return None, "has an empty Image value"
    if PurePath(name).is_absolute():
        return None, f"is an absolute path (names must be relative to {folder})"
    if ".." in PurePath(name).parts:
        return None, f"contains '..' and would escape {folder}"
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        return None, f"resolves outside {folder} (to {path})"
    if not path.is_file():
        return None, f"does not exist under {folder}"
    return path, None


def _new_entry(split: str, folder: Path, image: str, where: str, label: str | None = None) -> _Entry:
    path, problem = _locate(folder, image)
    entry = _Entry(split=split, image=image, where=where, id=label, path=path)
    if problem:
        entry.problems.append(problem)
    return entry


def _list_train(root: Path, new_label: str = NEW_WHALE) -> list[_Entry]:
    csv_path = root / "train.csv"
    if not csv_path.is_file():
        raise InputError(f"missing {csv_path} (the Kaggle layout needs train.csv with columns Image,Id)")
    if not (root / "train").is_dir():
        raise InputError(f"missing training image folder {root / 'train'}")
    folder = (root / "train").resolve()
    table = read_csv(csv_path, required=["Image", "Id"], known=["encounter", *spellings()], image_folders=[folder])
    entries, stripped = [], []
    for position, (image, label) in enumerate(zip(table["Image"].tolist(), table["Id"].tolist())):
        # The user's word for an unknown animal (data.new_label) is new_whale from here on.
        unknown = label.strip() in (new_label.strip(), NEW_WHALE)
        entry = _new_entry(
            "train", folder, image, csv_line(csv_path, position), NEW_WHALE if unknown else label.strip()
        )
        problem = None if unknown else id_problem(label)
        if problem:
            entry.problems.append(problem)
        elif label.strip() != label:
            stripped.append(f"{entry.where} ({label!r})")
        entries.append(entry)
    if stripped:
        logger.warning("removed whitespace around the Id of %d row(s): %s", len(stripped), named_list(stripped))
    warn_ids_differing_in_case([entry for entry in entries if not entry.problems])
    _flag_duplicates(entries)
    return entries


def _list_test(root: Path, test_order: str) -> list[_Entry]:
    submission = root / "sample_submission.csv"
    if not (root / "test").is_dir():
        raise InputError(f"missing test image folder {root / 'test'}")
    folder = (root / "test").resolve()
    files_in_folder = sorted(
        path.name for path in folder.iterdir() if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()
    )
    use_submission = test_order == "sample_submission" or (test_order == "auto" and submission.is_file())
    if use_submission:
        if not submission.is_file():
            raise InputError(f"test_order is 'sample_submission' but {submission} does not exist")
        known = ["Id", "encounter", *spellings()]
        names = read_csv(submission, required=["Image"], known=known, image_folders=[folder])
        names = names["Image"].tolist()
        if not names:
            raise InputError(f"{submission} lists no test images")
        entries = [
            _new_entry("test", folder, name, csv_line(submission, position)) for position, name in enumerate(names)
        ]
        unlisted = len(set(files_in_folder) - set(names))
        if unlisted:
            logger.warning("%d image(s) in %s are not listed in %s and are ignored", unlisted, folder, submission)
    else:
        if not files_in_folder:
            raise InputError(
                f"test folder {folder} holds no images (JPEG, PNG, HEIC/HEIF, TIFF, WebP, BMP or camera RAW files)"
            )
        entries = [_new_entry("test", folder, name, "test folder") for name in files_in_folder]
    _flag_duplicates(entries)
    return entries


def _flag_duplicates(entries: list[_Entry]) -> None:
    """Later listings of a name are duplicates; the first one too when the listings disagree on Id."""
    listings = defaultdict(list)
    for entry in entries:
        if entry.image.strip():
            listings[entry.image].append(entry)
    for same_name in listings.values():
        first, *repeats = same_name
        for repeat in repeats:
            repeat.problems.append(f"is a duplicate of {first.where}")
        if len({entry.id for entry in same_name}) > 1:
            lines = ", ".join(repeat.where for repeat in repeats)
            first.problems.append(f"is listed again with a different Id ({lines})")


def _flag_images_in_both_splits(train_entries: list[_Entry], test_entries: list[_Entry]) -> None:
    # Image names key every downstream table (and mask files), so they must be unique across splits.
    # Only the train row is flagged: dropping a test image would leave a hole in the submission.
    test_names = {entry.image for entry in test_entries}
    for entry in train_entries:
        if entry.image in test_names:
            entry.problems.append("is also listed in the test set")


def inspect_image(path: Path, cache: PhotoCache | None = None) -> ImageFacts | str:
    """Facts about one image file (full decode, EXIF-upright size, perceptual hash from the same
    decoded pixels), or the problem as text; from `cache` when these bytes were inspected before
    (only readable photos are cached: a problem is always found again)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    sha1 = hashlib.sha1(data).hexdigest()
    key = cache.key(sha1) if cache is not None else None
    found = cache.get(key) if cache is not None else None
    if found is not None:
        width, height, grayscale = (int(v) for v in found["size_gray"])
        phash = found["phash"].tobytes() if len(found["phash"]) else None
        return ImageFacts(width=width, height=height, grayscale=bool(grayscale), sha1=sha1, phash=phash)
    try:
        rgb = decode_image_rgb(data, str(path))
    except UnreadableImageError as exc:
        return exc.reason
    facts = ImageFacts(
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        grayscale=is_grayscale(rgb),
        sha1=sha1,
        phash=perceptual_hash(rgb),
    )
    if cache is not None:
        size_gray = np.array([facts.width, facts.height, int(facts.grayscale)], np.int64)
        cache.put(key, size_gray=size_gray, phash=bytes_array(facts.phash or b""))
    return facts


# What an ingest cache entry depends on besides the photo's bytes: the perceptual hash's definition.
_FACTS_VERSION = {"phash_size": PHASH_SIZE, "min_hash_contrast": MIN_HASH_CONTRAST, "version": 1}


def _inspect_images(entries: list[_Entry], threads: int, cache_dir=None) -> None:
    """Decode every locatable image; threads suffice since PIL decoding and hashing drop the GIL."""
    todo = [entry for entry in entries if entry.path is not None]
    paths = [entry.path for entry in todo]
    cache = PhotoCache(cache_dir, "ingest", _FACTS_VERSION) if cache_dir is not None else None
    results = parallel_map(lambda path: inspect_image(path, cache), paths, threads)
    if cache is not None:
        cache.close()
        logger.info(cache.summary(f"checks and hashes of {len(paths)} photos"))
    for entry, result in zip(todo, results):
        if isinstance(result, ImageFacts):
            entry.facts = result
        else:
            entry.problems.append(result)


def _flag_small_images(entries: list[_Entry], min_side: int, *, as_problem: bool) -> None:
    """Photos with a side under `min_side` px: a bad row when `as_problem` (on_bad_image: skip),
    else named in one warning (they are kept: a small photo may still be matched)."""
    small = [entry for entry in entries if entry.facts and min(entry.facts.width, entry.facts.height) < min_side]
    if as_problem:
        for entry in small:
            size = f"{entry.facts.width}x{entry.facts.height}"
            entry.problems.append(f"is {size} px, under the minimum side of {min_side} px")
    elif small:
        named = [f"{entry.where} {entry.image!r} ({entry.facts.width}x{entry.facts.height})" for entry in small]
        logger.warning(
            "%d image(s) have a side under %d px (data.min_image_side): %s", len(small), min_side, named_list(named)
        )


def _photo(entry: _Entry) -> Photo:
    return Photo(entry.split, entry.image, entry.id, entry.where, entry.facts.sha1, entry.facts.phash)


def _table(entries: list[_Entry], split: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": [entry.image for entry in entries],
            "path": [str(entry.path) for entry in entries],
            "width": np.array([entry.facts.width for entry in entries], dtype=np.int64),
            "height": np.array([entry.facts.height for entry in entries], dtype=np.int64),
            "grayscale": np.array([entry.facts.grayscale for entry in entries], dtype=bool),
            "sha1": [entry.facts.sha1 for entry in entries],
            "split": split,
        }
    )


def _rejected_table(rejected: list[_Entry]) -> pd.DataFrame:
    return pd.DataFrame(
        [(entry.split, entry.image, f"{'; '.join(entry.problems)} ({entry.where})") for entry in rejected],
        columns=REJECTED_COLUMNS,
    )


def _listing(rejected: list[_Entry]) -> str:
    if not rejected:
        return ""
    return "; rejected rows:\n" + "\n".join(entry.describe_problems() for entry in rejected)


def _summarise(train_df: pd.DataFrame, test_df: pd.DataFrame, n_rejected: int, n_folds: int) -> dict:
    images_per_id = train_df.loc[train_df["id"] != NEW_WHALE, "id"].value_counts()
    folds = train_df["fold"].to_numpy()
    return {
        "n_train": len(train_df),
        "n_test": len(test_df),
        "n_rejected": n_rejected,
        "n_identities": len(images_per_id),
        "n_single_image_identities": int((images_per_id == 1).sum()),
        "new_whale_share": float((train_df["id"] == NEW_WHALE).mean()),
        "grayscale_share": float(np.concatenate([train_df["grayscale"], test_df["grayscale"]]).mean()),
        "fold_sizes": np.bincount(folds[folds != ALWAYS_TRAIN], minlength=n_folds).tolist(),
        "n_always_train": int((folds == ALWAYS_TRAIN).sum()),
    }
