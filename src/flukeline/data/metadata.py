"""What biologists record with each photo, read from the input CSVs and checked: `date`, `location`,
`latitude` / `longitude` and `viewpoint` (the `encounter` column is catalogue_rows' own).

All optional, in train.csv, the catalogue (training photos) and sample_submission.csv or a
`test.csv` of test metadata (Image plus any of these columns; test photos). Column names are read
in any case (`Date`, `LOCATION`) and under a few common other names (`lat`, `lon`, `site`, `side`,
`view`). A column found in any source becomes a column of train.parquet / test.parquet (empty
where a photo has no value); without any, the tables keep their usual columns, so a run without
metadata is unchanged. A later source wins for a photo (the catalogue over train.csv, test.csv
over sample_submission.csv).

Values are normalised so that later stages compare them directly:
- date: ISO 8601, a day (`2024-07-03`) with an optional time (`2024-07-03T14:05`, seconds kept
  when given); a time zone is converted to UTC and dropped. Written as that ISO text.
- location: the site name, whitespace trimmed (compared as written, case included).
- latitude / longitude: decimal degrees in [-90, 90] and [-180, 180]; both or neither.
- viewpoint: one or more of front, back, top, bottom, left, right (`front-left`, `FrontLeft`,
  `front_left`, Wildbook's `upfrontleft`; `L` / `R`, `up` / `down` accepted), written in the fixed
  order top/bottom, front/back, left/right, joined by `-`. Two opposite sides (left and right) in
  one value are an error.

Every problem names the file, the line (the header is line 1) and the value; all of a file's
problems are reported at once, before any photo is decoded."""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.data.csv_encoding import csv_text
from flukeline.data.csv_rows import csv_line

logger = logging.getLogger(__name__)

DATE, LOCATION, LATITUDE, LONGITUDE, VIEWPOINT = "date", "location", "latitude", "longitude", "viewpoint"
METADATA_COLUMNS = (DATE, LOCATION, LATITUDE, LONGITUDE, VIEWPOINT)
# Other names a field team's spreadsheet may use for a column (compared case-insensitively).
ALIASES = {
    DATE: ("date", "datetime", "date_time"),
    LOCATION: ("location", "site"),
    LATITUDE: ("latitude", "lat"),
    LONGITUDE: ("longitude", "lon", "lng", "long"),
    VIEWPOINT: ("viewpoint", "view", "side"),
}
# The test photos' own metadata file beside sample_submission.csv.
TEST_METADATA = "test.csv"

# Viewpoint words: the canonical part each spelling stands for.
VIEW_WORDS = {
    "left": "left",
    "l": "left",
    "right": "right",
    "r": "right",
    "front": "front",
    "back": "back",
    "rear": "back",
    "top": "top",
    "up": "top",
    "dorsal": "top",
    "bottom": "bottom",
    "down": "bottom",
    "ventral": "bottom",
}
# The parts in written order (Wildbook's: up/down, front/back, left/right).
VIEW_ORDER = ("top", "bottom", "front", "back", "left", "right")
OPPOSITE = {"left": "right", "right": "left", "front": "back", "back": "front", "top": "bottom", "bottom": "top"}
# Longest words first, so that "frontleft" is front + left, never f... (single letters only alone).
_CONCATENATED = re.compile("|".join(sorted((w for w in VIEW_WORDS if len(w) > 1), key=len, reverse=True)))


def spellings() -> list[str]:
    """Every column name that counts as a metadata column in lower, Capitalised and UPPER case
    (csv_rows.read_csv's `known`, so that these are not reported as unknown columns)."""
    names = {alias for aliases in ALIASES.values() for alias in aliases}
    return sorted({variant for name in names for variant in (name, name.capitalize(), name.upper())})


def column_map(columns: Iterable[str]) -> dict[str, str]:
    """The CSV's column -> metadata column, for the columns that are metadata (first one wins
    where two names mean one column, e.g. both `site` and `location`)."""
    found: dict[str, str] = {}
    for column in columns:
        name = str(column).strip().lower()
        for canonical, aliases in ALIASES.items():
            if name in aliases and canonical not in found.values():
                found[column] = canonical
    return found


def parse_date(value: str) -> str:
    """ISO 8601 date with an optional time, normalised (ValueError when it is not one)."""
    text = value.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?", text):
        raise ValueError("not an ISO 8601 date (YYYY-MM-DD, optionally THH:MM[:SS] and a time zone)")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:  # 2024-02-30, 25:00
        raise ValueError(f"not a valid date ({error})") from None
    if len(text) == 10:
        return moment.date().isoformat()
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds" if re.search(r"\d{2}:\d{2}:\d{2}", text) else "minutes")


def parse_viewpoint(value: str) -> str:
    """The canonical viewpoint of a spelling (ValueError when it is none)."""
    text = value.strip().lower()
    words = [w for w in re.split(r"[\s\-_/,+]+", text) if w]
    parts = []
    for word in words:
        if word in VIEW_WORDS:
            parts.append(VIEW_WORDS[word])
            continue
        pieces = _CONCATENATED.findall(word)
        if not pieces or "".join(pieces) != word:
            raise ValueError(f"not a viewpoint (one or more of {', '.join(VIEW_ORDER)}; L, R accepted)")
        parts += [VIEW_WORDS[piece] for piece in pieces]
    if not parts:
        raise ValueError("not a viewpoint")
    clash = sorted({part for part in parts if OPPOSITE[part] in parts})
    if clash:
        raise ValueError(f"names opposite sides ({' and '.join(clash)})")
    return "-".join(part for part in VIEW_ORDER if part in parts)


def view_parts(viewpoint: str) -> frozenset[str]:
    """A canonical viewpoint's parts ("front-left" -> {front, left})."""
    return frozenset(viewpoint.split("-")) if viewpoint else frozenset()


def _coordinate(value: str, limit: float, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} is not a number") from None
    if not math.isfinite(number) or abs(number) > limit:
        raise ValueError(f"{name} outside [-{limit:g}, {limit:g}]")
    return number


@dataclass
class Metadata:
    """The metadata read from some CSVs: image -> {column: value}, and the columns any source had."""

    columns: list[str] = field(default_factory=list)
    values: dict[str, dict] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # image -> the line its values came from

    def __bool__(self) -> bool:
        return bool(self.columns)


def read_metadata(sources: Iterable[str | Path | None]) -> Metadata:
    """The metadata columns of every existing CSV among `sources` (each with an Image column),
    validated; an InputError lists every problem with its file, line and value."""
    found = Metadata()
    problems: list[str] = []
    for source in sources:
        if source is None or not Path(source).is_file():
            continue
        path = Path(source)
        rows = pd.read_csv(io.StringIO(csv_text(path)), dtype=str, keep_default_na=False)
        columns = column_map(rows.columns)
        if not columns:
            continue
        if "Image" not in rows.columns:
            raise InputError(f"{path}: metadata column(s) {', '.join(columns)} but no Image column to say whose")
        for canonical in columns.values():
            if canonical not in found.columns:
                found.columns.append(canonical)
        for position, row in enumerate(rows.to_dict("records")):
            values, row_problems = row_values({columns[c]: row[c] for c in columns}, csv_line(path, position))
            problems += row_problems
            if values:
                found.values.setdefault(row["Image"], {}).update(values)
                found.where[row["Image"]] = csv_line(path, position)
    if problems:
        raise InputError(f"{len(problems)} problem(s) in the metadata columns:\n" + "\n".join(problems))
    # Written in one order whatever the sources' column order.
    found.columns = [c for c in METADATA_COLUMNS if c in found.columns]
    return found


def row_values(cells: dict[str, str], where: str) -> tuple[dict, list[str]]:
    """One row's parsed values (empty cells left out) and its problems."""
    values, problems = {}, []
    parsers = {
        DATE: parse_date,
        LOCATION: str.strip,
        LATITUDE: lambda v: _coordinate(v, 90.0, "latitude"),
        LONGITUDE: lambda v: _coordinate(v, 180.0, "longitude"),
        VIEWPOINT: parse_viewpoint,
    }
    for column, cell in cells.items():
        if not cell.strip():
            continue
        try:
            values[column] = parsers[column](cell)
        except ValueError as error:
            problems.append(f"{where}: {column} {cell!r}: {error}")
    if (LATITUDE in values) != (LONGITUDE in values):
        given = LATITUDE if LATITUDE in values else LONGITUDE
        problems.append(f"{where}: {given} {cells[given]!r} without a {({LATITUDE, LONGITUDE} - {given}).pop()}")
    return values, problems


def add_metadata(table: pd.DataFrame, metadata: Metadata, name: str = "") -> pd.DataFrame:
    """`table` (an image table) with the metadata's columns (string columns, empty where unknown;
    latitude / longitude float, NaN where unknown); unchanged without metadata. Rows of the
    metadata naming no photo of the table are counted in a warning (`name`: the table's split)."""
    if not metadata:
        return table
    unused = sorted(set(metadata.values) - set(table["image"]))
    if unused:
        logger.warning(
            "metadata of %d photo(s) not among the %s photos ignored, e.g. %s",
            len(unused),
            name or "table's",
            ", ".join(f"{image!r} ({metadata.where[image]})" for image in unused[:3]),
        )
    out = table.copy()
    for column in metadata.columns:
        values = [metadata.values.get(image, {}).get(column) for image in table["image"]]
        if column in (LATITUDE, LONGITUDE):
            out[column] = pd.array([math.nan if v is None else v for v in values], dtype="float64")
        else:
            out[column] = pd.array(["" if v is None else v for v in values], dtype="string")
    return out


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The metadata columns an image table holds, in METADATA_COLUMNS order."""
    return [column for column in METADATA_COLUMNS if column in table.columns]
