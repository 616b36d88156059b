"""Every photo of the project as one sighting: the training table (train.csv's photos and any
catalogue rows ingest added), a catalogue version (`flukeline accept`) and the run's
decisions.csv, each photo once, with who decided its individual and where its record lies.

A sighting's `status` says how its individual is known:
- reviewed: a person identified it (train.csv, or a catalogue version: confirmed on the review page);
- auto-accepted: the decide rule's automatic match or new individual (decisions.csv match / new);
- provisional: waiting on the review page (decisions.csv review); no individual yet, but its best
  candidate and the animal it would be if new (`new_individual`), for the abundance's range;
- unidentified: a training photo of an animal nobody identified (new_whale in train.csv).

A photo the catalogue version holds is the catalogue's (a person confirmed it), whatever the
training table or decisions.csv say of it. A new individual decided automatically keeps its
provisional id until `flukeline accept` gives it a catalogue id: the decide rule's group (new_0001,
...), else new:<encounter>, else new:<photo> (catalogue.accept.new_animal, the animal accept would
make of it).

`where` is the row a person would fix: "train.csv line 18", "catalogue-0002.csv line 5",
"decisions.csv line 40" (header = line 1; a training row found in neither CSV: its
train.parquet row). Every problem of the inputs is collected, each with its `where`."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from flukeline.catalogue.accept import new_animal
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.catalogue_rows import ENCOUNTER, read_catalogue
from flukeline.data.csv_encoding import csv_text
from flukeline.data.csv_rows import csv_line, read_csv
from flukeline.data.metadata import DATE, LATITUDE, LOCATION, LONGITUDE, column_map, row_values, spellings

REVIEWED, AUTO, PROVISIONAL, UNIDENTIFIED = "reviewed", "auto-accepted", "provisional", "unidentified"
CONFIRMED = (REVIEWED, AUTO)
PLACE = (DATE, LOCATION, LATITUDE, LONGITUDE)
COLUMNS = [
    "image",
    "individual",  # "" for provisional and unidentified photos
    "status",
    "where",
    "source",  # the file the sighting comes from (train.csv, catalogue-0001.csv, decisions.csv)
    DATE,  # ISO 8601 as ingest normalised it, "" when unknown
    LOCATION,
    LATITUDE,
    LONGITUDE,
    ENCOUNTER,
    "path",
    "candidate",  # provisional: the best candidate identity
    "p_correct",
    "p_new",
    "new_individual",  # provisional and automatic new: the animal it is as a new individual
]
DECISIONS = ("match", "new", "review")


@dataclass
class Sightings:
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    superseded: int = 0  # rows of train.parquet or decisions.csv replaced by the catalogue's


def new_individual_id(given: str, encounter: str, image: str) -> str:
    """The provisional id of a new individual (see the module's docstring)."""
    kind, key = new_animal(given, encounter, image)
    return key if kind in ("group", "named") else f"new:{key}"


def read_sightings(train_path, test_path, decisions_path, catalogue_path=None, train_csv=None) -> Sightings:
    """The project's sightings, in the order train, catalogue, decisions (see the module docstring)."""
    problems: list[str] = []
    catalogue = _catalogue_rows(Path(catalogue_path), problems) if catalogue_path else []
    in_catalogue = {row["image"] for row in catalogue}
    train = _train_rows(Path(train_path), Path(train_csv) if train_csv else None)
    decisions = _decision_rows(Path(decisions_path), Path(test_path), problems)
    kept = [row for row in train + decisions if row["image"] not in in_catalogue]
    superseded = len(train) + len(decisions) - len(kept)
    rows = [row for row in kept if row["source_kind"] == "train"] + catalogue
    rows += [row for row in kept if row["source_kind"] == "decisions"]
    table = pd.DataFrame([{c: row.get(c, "") for c in COLUMNS} for row in rows], columns=COLUMNS)
    for column in (LATITUDE, LONGITUDE, "p_correct", "p_new"):
        table[column] = pd.to_numeric(table[column].replace("", math.nan), errors="coerce").astype("float64")
    return Sightings(table=table.reset_index(drop=True), problems=problems, superseded=superseded)


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value) else str(value)


def _train_rows(train_path: Path, train_csv: Path | None) -> list[dict]:
    """train.parquet's photos: the user's ids (original_id), reviewed, or unidentified for new_whale."""
    train = pd.read_parquet(train_path)
    lines = _csv_lines(train_csv) if train_csv else {}
    ids = train["original_id"] if "original_id" in train else train["id"]
    rows = []
    for position, (record, identity) in enumerate(zip(train.to_dict("records"), ids)):
        identity = _text(identity)
        known = identity not in ("", NEW_WHALE)
        rows.append(
            {
                "image": record["image"],
                "individual": identity if known else "",
                "status": REVIEWED if known else UNIDENTIFIED,
                "where": lines.get(record["image"], f"{train_path.name} row {position + 1}"),
                "source": train_csv.name if train_csv and record["image"] in lines else train_path.name,
                "source_kind": "train",
                "path": _text(record.get("path")),
                ENCOUNTER: _text(record.get(ENCOUNTER)),
                **{column: _text(record.get(column)) for column in PLACE},
            }
        )
    return rows


def _csv_lines(path: Path) -> dict[str, str]:
    """image -> "train.csv line N" of a CSV with an Image column (none: {})."""
    if not path.is_file():
        return {}
    table = pd.read_csv(io.StringIO(csv_text(path)), dtype=str, keep_default_na=False)
    if "Image" not in table:
        return {}
    return {image: csv_line(path, position) for position, image in reversed(list(enumerate(table["Image"])))}


def _place(cells: dict, where: str, problems: list[str]) -> dict:
    """A CSV row's date and place, parsed as ingest parses them (flukeline.data.metadata)."""
    values, row_problems = row_values({column: cell for column, cell in cells.items() if column in PLACE}, where)
    problems += row_problems
    return {column: values.get(column, "") for column in PLACE}


def _catalogue_rows(path: Path, problems: list[str]) -> list[dict]:
    table = read_catalogue(path)
    columns = column_map(c for c in table.columns if c in spellings())
    folder, seen, rows = path.parent, {}, []
    for position, record in enumerate(table.to_dict("records")):
        where = csv_line(path, position)
        image, identity = record["Image"].strip(), record["Id"].strip()
        if image in seen:
            problems.append(f"{where}: photo {image!r} is listed twice (first on {seen[image]})")
            continue
        seen[image] = where
        if identity in ("", NEW_WHALE):
            problems.append(f"{where}: photo {image!r} has no individual (Id {identity!r})")
            continue
        rows.append(
            {
                "image": image,
                "individual": identity,
                "status": REVIEWED,
                "where": where,
                "source": path.name,
                "source_kind": "catalogue",
                "path": str((folder / record["path"]).absolute()) if record["path"].strip() else "",
                ENCOUNTER: record.get(ENCOUNTER, "").strip(),
                **_place({columns[c]: record[c] for c in columns}, where, problems),
            }
        )
    return rows


def _decision_rows(path: Path, test_path: Path, problems: list[str]) -> list[dict]:
    decisions = read_csv(
        path,
        required=["Image", "decision", "Id"],
        known=["candidate", "p_correct", "p_new", "top_score", "margin", ENCOUNTER, "photos", "new_group", "viewpoint"]
        + list(PLACE),
    )
    test = pd.read_parquet(test_path).set_index("image")
    seen, rows = {}, []
    for position, record in enumerate(decisions.to_dict("records")):
        where = csv_line(path, position)
        image, decision, identity = record["Image"].strip(), record["decision"].strip(), record["Id"].strip()
        if image in seen:
            problems.append(f"{where}: photo {image!r} is listed twice (first on {seen[image]})")
            continue
        seen[image] = where
        if decision not in DECISIONS:
            problems.append(f"{where}: decision {decision!r} for photo {image!r} is none of {', '.join(DECISIONS)}")
            continue
        if image not in test.index:
            problems.append(f"{where}: photo {image!r} is no test photo of this run ({test_path})")
            continue
        if decision == "match" and identity in ("", NEW_WHALE):
            problems.append(f"{where}: match for photo {image!r} names no individual (Id {identity!r})")
            continue
        photo = test.loc[image]
        encounter = record.get(ENCOUNTER, "").strip() or _text(photo.get(ENCOUNTER))
        # decisions.csv carries the test table's date and place; an older one without them: the table's.
        cells = {c: record[c] if c in record else _text(photo.get(c)) for c in PLACE}
        fresh = new_individual_id(record.get("new_group", "").strip() or identity, encounter, image)
        rows.append(
            {
                "image": image,
                "individual": identity if decision == "match" else fresh if decision == "new" else "",
                "status": PROVISIONAL if decision == "review" else AUTO,
                "where": where,
                "source": path.name,
                "source_kind": "decisions",
                "path": _text(photo.get("path")),
                ENCOUNTER: encounter,
                "candidate": record.get("candidate", "").strip() if decision == "review" else "",
                "p_correct": record.get("p_correct", ""),
                "p_new": record.get("p_new", ""),
                "new_individual": fresh if decision != "match" else "",
                **_place(cells, where, problems),
            }
        )
    return rows
