"""Optional annotations of a Kaggle-layout data root, read and validated for ingest
(`data.annotations`, each path relative to the data root or absolute): a folder of binary mask PNGs
named `<stem>.png` like the photos, a keypoints CSV (Image,keypoint,x,y,visible; an invisible
keypoint may leave x and y empty) and a boxes CSV (Image,x0,y0,x1,y1, several boxes per image
allowed).

Every bad row of a file is collected before anything is raised, so one message lists them all,
each as "<file> line N"; an annotated image must be in train.csv or the test set. Ingest writes the
validated tables as results/data/keypoints.parquet and boxes.parquet (`ANNOTATION_COLUMNS`, empty
when absent).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.data.csv_rows import csv_line, read_csv

ANNOTATION_KINDS = ("masks", "keypoints", "boxes")

KEYPOINT_COLUMNS = ["Image", "keypoint", "x", "y", "visible"]

BOX_COLUMNS = ["Image", "x0", "y0", "x1", "y1"]

# Column types of the annotation tables written next to the train table (empty when absent).
ANNOTATION_COLUMNS = {
    "keypoints": {"image": "string", "keypoint": "string", "x": "float64", "y": "float64", "visible": "bool"},
    "boxes": {"image": "string", "x0": "float64", "y0": "float64", "x1": "float64", "y1": "float64"},
}


def load_annotations(
    root: Path, annotations: Mapping[str, str | os.PathLike | None], listed: set[str]
) -> tuple[Path | None, dict[str, pd.DataFrame]]:
    """The masks folder (or None) and the validated keypoints/boxes tables, keyed by kind."""
    sources = {kind: value for kind, value in annotations.items() if value}
    unknown_kinds = sorted(set(sources) - set(ANNOTATION_KINDS))
    if unknown_kinds:
        raise InputError(
            f"annotations: unknown kind(s) {', '.join(unknown_kinds)} (expected {', '.join(ANNOTATION_KINDS)})"
        )
    masks_dir = _annotation_path(root, "masks", sources["masks"], want_dir=True) if "masks" in sources else None
    # The photos the annotations name: they decide a CSV's encoding when it is not UTF-8.
    photo_folders = [root / "train", root / "test"]
    tables = {
        kind: reader(_annotation_path(root, kind, sources[kind], want_dir=False), listed, photo_folders)
        for kind, reader in (("keypoints", _read_keypoints), ("boxes", _read_boxes))
        if kind in sources
    }
    return masks_dir, tables


def _annotation_path(root: Path, kind: str, value: str | os.PathLike, *, want_dir: bool) -> Path:
    path = Path(value)
    path = path if path.is_absolute() else root / path
    if want_dir and not path.is_dir():
        raise InputError(f"annotations.{kind}: folder {path} does not exist")
    if not want_dir and not path.is_file():
        raise InputError(f"annotations.{kind}: file {path} does not exist")
    return path.resolve()


def _mask_paths(masks_dir: Path, images: pd.Series) -> pd.Series:
    candidates = (masks_dir / f"{PurePath(image).stem}.png" for image in images)
    # A string dtype even when every value is missing, so the Parquet column is never type "null".
    paths = [str(path) if path.is_file() else None for path in candidates]
    return pd.Series(paths, index=images.index, dtype=str)


def _numeric(table: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(table[column].str.strip(), errors="coerce").astype("float64")  # "" -> NaN


def _check_annotation_rows(
    path: Path, table: pd.DataFrame, problems_by_row: dict[int, list[str]], listed: set[str]
) -> None:
    for position, image in enumerate(table["Image"].tolist()):
        if image not in listed:
            problems_by_row[position].insert(0, f"image {image!r} is in neither train.csv nor the test set")
    if problems_by_row:
        raise InputError(
            f"{path}: {len(problems_by_row)} bad row(s):\n"
            + "\n".join(
                f"{csv_line(path, position)}: {'; '.join(problems)}"
                for position, problems in sorted(problems_by_row.items())
            )
        )


def _read_keypoints(path: Path, listed: set[str], photo_folders: list[Path]) -> pd.DataFrame:
    """Columns image, keypoint, x, y (float; may be empty when not visible), visible (bool)."""
    table = read_csv(path, required=KEYPOINT_COLUMNS, image_folders=photo_folders)
    x, y, visible = _numeric(table, "x"), _numeric(table, "y"), _numeric(table, "visible")
    problems_by_row = defaultdict(list)
    for position in np.flatnonzero(~visible.isin([0, 1])):
        problems_by_row[position].append(f"visible must be 0 or 1, got {table['visible'].iloc[position]!r}")
    for name, values in (("x", x), ("y", y)):
        # An invisible keypoint may leave its coordinates empty; a visible one needs numbers.
        for position in np.flatnonzero(values.isna().to_numpy() & (visible != 0).to_numpy()):
            problems_by_row[position].append(f"{name} is not a number: {table[name].iloc[position]!r}")
    _check_annotation_rows(path, table, problems_by_row, listed)
    return pd.DataFrame(
        {"image": table["Image"], "keypoint": table["keypoint"], "x": x, "y": y, "visible": visible.astype(bool)}
    )


def _read_boxes(path: Path, listed: set[str], photo_folders: list[Path]) -> pd.DataFrame:
    """Columns image, x0, y0, x1, y1 (float, x0 < x1 and y0 < y1); several boxes per image allowed."""
    table = read_csv(path, required=BOX_COLUMNS, image_folders=photo_folders)
    coords = {name: _numeric(table, name) for name in BOX_COLUMNS[1:]}
    problems_by_row = defaultdict(list)
    for name, values in coords.items():
        for position in np.flatnonzero(~np.isfinite(values.to_numpy())):
            problems_by_row[position].append(f"{name} is not a number: {table[name].iloc[position]!r}")
    for low, high in (("x0", "x1"), ("y0", "y1")):
        for position in np.flatnonzero((coords[low] >= coords[high]).to_numpy()):
            problems_by_row[position].append(f"{low} must be < {high}")
    _check_annotation_rows(path, table, problems_by_row, listed)
    return pd.DataFrame({"image": table["Image"], **coords})
