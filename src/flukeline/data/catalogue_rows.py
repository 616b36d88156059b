"""The catalogue of confirmed photos (`flukeline accept`) as ingest's extra training rows, and the
optional `encounter` column of the input CSVs carried into the image tables.

A catalogue is a folder of versions, catalogue-0001.csv, catalogue-0002.csv, ... (each the whole
catalogue: the previous version's rows plus one accept's; none is ever rewritten) with the
accepted photos copied under photos/. Columns: Image, Id, path (relative to the folder),
decision (match / new), encounter, source (the review export it came from). `data.catalogue`
names the folder; ingest appends the newest version's rows to train.csv's, so the next run trains
and matches on them like any training photo.

Encounters: an `encounter` column in train.csv, sample_submission.csv or the catalogue (photos of
one animal on one day) becomes an `encounter` column of train.parquet / test.parquet; without one
the tables keep their usual columns. The decide rule decides an encounter's photos together."""

from __future__ import annotations

import io
import re
from pathlib import Path, PurePath

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.data.csv_encoding import csv_text
from flukeline.data.csv_rows import csv_line, read_csv
from flukeline.data.metadata import spellings

CATALOGUE_COLUMNS = ["Image", "Id", "path", "decision", "encounter", "source"]
VERSION_PATTERN = re.compile(r"^catalogue-(\d{4,})\.csv$")
PHOTOS = "photos"
ENCOUNTER = "encounter"


def catalogue_versions(folder: str | Path) -> list[Path]:
    """The folder's catalogue versions, oldest first (none: [])."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := VERSION_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def version_number(path: Path) -> int:
    return int(VERSION_PATTERN.match(Path(path).name).group(1))


def latest_catalogue(location: str | Path | None) -> Path | None:
    """The catalogue CSV to ingest: `location` itself when it is a file, the newest version when
    it is a folder (None when it holds none yet, or no location is configured)."""
    if not location:
        return None
    location = Path(location)
    if location.is_file():
        return location
    versions = catalogue_versions(location)
    return versions[-1] if versions else None


def read_catalogue(path: str | Path) -> pd.DataFrame:
    # Date, place and side of the photos (flukeline.data.metadata) may be columns too.
    return read_csv(Path(path), required=["Image", "Id", "path"], known=[*CATALOGUE_COLUMNS, *spellings()])


def catalogue_entries(path: str | Path | None, listed: dict[str, str], make_entry) -> list:
    """Ingest's training entries for the catalogue's rows: make_entry(image=, where=, id=, path=)
    per row, with its problems appended to `.problems` (a photo that is missing, outside the
    folder, or named like a train.csv row: `listed`, image -> where). Empty without a catalogue."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data.catalogue: {path} does not exist")
    folder = path.parent.resolve()
    table = read_catalogue(path)
    entries, seen = [], {}
    for position, row in enumerate(table.itertuples(index=False)):
        where = csv_line(path, position)
        photo, problem = _catalogue_photo(folder, row.path)
        entry = make_entry(image=row.Image, where=where, id=row.Id.strip(), path=photo)
        if problem:
            entry.problems.append(problem)
        if not row.Id.strip():
            entry.problems.append("has an empty Id")
        if row.Image in listed:
            entry.problems.append(f"is also listed in {listed[row.Image]}")
        if row.Image in seen:
            entry.problems.append(f"is a duplicate of {seen[row.Image]}")
        seen.setdefault(row.Image, where)
        entries.append(entry)
    return entries


def _catalogue_photo(folder: Path, name: str) -> tuple[Path | None, str | None]:
    if not name.strip() or PurePath(name).is_absolute() or ".." in PurePath(name).parts:
        return None, f"has path {name!r}: it must be relative to {folder}, inside it"
    photo = (folder / name).resolve()
    if not photo.is_relative_to(folder):
        return None, f"has path {name!r}, which resolves outside {folder}"
    if not photo.is_file():
        return None, f"has path {name!r}, which does not exist under {folder}"
    return photo, None


def add_encounters(table: pd.DataFrame, sources: list[str | Path | None]) -> pd.DataFrame:
    """`table` with an `encounter` column (empty where unknown) when any existing CSV of `sources`
    (Image plus encounter) has one; else `table` unchanged. A later source wins for a photo."""
    known: dict[str, str] = {}
    found = False
    for source in sources:
        if source is None or not Path(source).is_file():
            continue
        # csv_text: the encoding ingest already decided for this file (train.csv may be cp1252).
        rows = pd.read_csv(io.StringIO(csv_text(source)), dtype=str, keep_default_na=False)
        if ENCOUNTER not in rows.columns or "Image" not in rows.columns:
            continue
        found = True
        known.update({image: value.strip() for image, value in zip(rows["Image"], rows[ENCOUNTER]) if value.strip()})
    if not found:
        return table
    return table.assign(**{ENCOUNTER: table["image"].map(lambda image: known.get(image, "")).astype("string")})


def fold_units(train: pd.DataFrame, duplicate_units: list | None) -> list | None:
    """The fold unit of each training photo (core.folds.assign_folds: photos of one identity with
    one unit share a fold): its duplicate group when it has one, else its encounter. Photos of one
    encounter are near-copies (one animal, one day, often one burst), so splitting them across
    folds would let validation match a photo to its sibling, as with duplicates. None when there
    is neither, which keeps the folds exactly as without units."""
    encounters = train[ENCOUNTER].tolist() if ENCOUNTER in train else [""] * len(train)
    duplicates = duplicate_units if duplicate_units is not None else [None] * len(train)
    units = [
        ("duplicate", group) if group is not None else ("encounter", encounter) if encounter else None
        for group, encounter in zip(duplicates, encounters)
    ]
    return units if any(unit is not None for unit in units) else None
