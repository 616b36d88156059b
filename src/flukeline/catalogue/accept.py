"""`flukeline accept`: the review page's export (Image,decision,Id) read back into the catalogue of
confirmed photos that the next run trains on (data.catalogue; flukeline.data.catalogue_rows).

Confirmed matches keep the id the person chose; confirmed new individuals get fresh ids
(flk_0001, flk_0002, ... above every flk_ number in use, never an id the train table or the
catalogue holds), one per new animal: photos sharing an encounter are one animal, and so are
photos given one provisional id new_0001, new_0002, ... (the groups of new individuals in
decisions.csv, which the review page puts in its export). A new row may also name its animal
itself (another Id than new_whale), which must then be an id nobody uses.
`unsure` rows are left out.

Nothing is overwritten: each accept writes the next version, catalogue-<N+1>.csv, holding the
previous version's rows and the new ones (created exclusively: a version that exists is never
replaced), and copies the photos under photos/ (a copy that exists must be the same file). Every
problem is found before anything is written, and all are reported at once, each with the
export's file and line."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.catalogue_rows import (
    CATALOGUE_COLUMNS,
    ENCOUNTER,
    PHOTOS,
    catalogue_versions,
    read_catalogue,
    version_number,
)
from flukeline.data.csv_rows import csv_line, read_csv
from flukeline.data.metadata import METADATA_COLUMNS, column_map

log = logging.getLogger(__name__)

DECISIONS = ("match", "new", "unsure")
FRESH = re.compile(r"^flk_(\d+)$")
# The provisional ids of new individuals grouped across a batch (decisions.csv new_group).
PROVISIONAL = re.compile(r"^new_\d{4,}$")


def sha1_of(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def fresh_ids(count: int, used: set[str], prefix: str = "flk_") -> list[str]:
    """`count` new ids flk_NNNN numbered above every one in `used`, none of them in `used`."""
    numbers = [int(m.group(1)) for i in used if (m := FRESH.match(i))]
    n, out = max(numbers, default=0), []
    while len(out) < count:
        n += 1
        candidate = f"{prefix}{n:04d}"
        if candidate not in used:
            out.append(candidate)
    return out


def write_exclusive(path: Path, table: pd.DataFrame) -> None:
    """Write the CSV beside `path`, then link it into place: fails, and writes nothing, when
    `path` exists (another accept got there first), so no version is ever overwritten."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        table.to_csv(tmp, index=False)
        try:
            os.link(tmp, path)
        except FileExistsError as error:
            raise InputError(f"{path} exists already: another accept wrote it; run accept again") from error
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class _Known:
    """What an export is checked against: the run's test and train tables and the catalogue."""

    test_path: Path
    train_path: Path
    test_of: pd.DataFrame  # the test table by image
    train_images: set
    versions: list  # catalogue version files, oldest first
    previous: pd.DataFrame  # the newest version's rows
    in_catalogue: dict  # image -> row of `previous`
    catalogue_ids: set
    ids: set  # every individual's id in the train table or the catalogue

    @classmethod
    def read(cls, test_path, train_path, catalogue_dir: Path) -> _Known:
        test, train = pd.read_parquet(test_path), pd.read_parquet(train_path)
        versions = catalogue_versions(catalogue_dir)
        previous = read_catalogue(versions[-1]) if versions else pd.DataFrame(columns=CATALOGUE_COLUMNS)
        for column in CATALOGUE_COLUMNS:
            if column not in previous:
                previous[column] = ""
        train_ids = set(train["id"]) - {NEW_WHALE}
        # A training table made with the catalogue holds its ids too; original_id (duplicate grouping)
        # holds the user's ids where a grouped training id replaced them.
        if "original_id" in train:
            train_ids |= set(train["original_id"]) - {NEW_WHALE}
        catalogue_ids = set(previous["Id"])
        return cls(
            test_path=test_path,
            train_path=train_path,
            test_of=test.set_index("image"),
            train_images=set(train["image"]),
            versions=versions,
            previous=previous,
            in_catalogue={image: i for i, image in enumerate(previous["Image"])},
            catalogue_ids=catalogue_ids,
            ids=train_ids | catalogue_ids,
        )


def accept(
    decisions_path, test_path, train_path, catalogue_dir, *, prefix: str = "flk_", gallery_dir=None, threads: int = 1
) -> dict:
    """Append the export's confirmed rows to the catalogue in `catalogue_dir` as a new version;
    returns a summary (version written, matches, new individuals and their ids, skipped). With
    `gallery_dir`, the accepted photos also become sightings of that gallery (flukeline add), so
    `identify` finds them before any retraining."""
    decisions_path, catalogue_dir = Path(decisions_path), Path(catalogue_dir)
    export = read_csv(decisions_path, required=["Image", "decision", "Id"])
    known = _Known.read(test_path, train_path, catalogue_dir)
    rows, problems = _checked_rows(export, decisions_path, known)
    _assign_ids(rows, known.ids, prefix)
    problems += _encounter_conflicts(rows)
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {decisions_path}, nothing accepted:\n" + "\n".join(problems))
    if not rows:
        raise InputError(
            f"{decisions_path}: no confirmed match or new individual to accept (only unsure rows, or none)"
        )

    _copy_photos(rows, catalogue_dir / PHOTOS)
    added = pd.DataFrame(
        {
            "Image": [r["Image"] for r in rows],
            "Id": [r["Id"] for r in rows],
            "path": [f"{PHOTOS}/{r['Image']}" for r in rows],
            "decision": [r["decision"] for r in rows],
            ENCOUNTER: [r["encounter"] for r in rows],
            "source": decisions_path.name,
        }
    )
    versions = known.versions
    number = version_number(versions[-1]) + 1 if versions else 1
    target = catalogue_dir / f"catalogue-{number:04d}.csv"
    previous, added = _with_metadata(known.previous, added, known.test_of)
    table = pd.concat([previous, added], ignore_index=True)
    write_exclusive(target, table)
    fresh = sorted({r["Id"] for r in rows if r["decision"] == "new"})
    summary = {
        "catalogue": str(target),
        "previous": str(versions[-1]) if versions else None,
        "rows": len(table),
        "matches": sum(r["decision"] == "match" for r in rows),
        "new_individual_photos": sum(r["decision"] == "new" for r in rows),
        "new_individuals": fresh,
        "unsure_skipped": int((export["decision"].str.strip() == "unsure").sum()),
    }
    log.info(
        "accepted %d match(es) and %d photo(s) of %d new individual(s) into %s (%d rows)",
        summary["matches"],
        summary["new_individual_photos"],
        len(fresh),
        target,
        len(table),
    )
    if gallery_dir is not None:
        summary["gallery_sightings"] = _add_to_gallery(gallery_dir, added, catalogue_dir, threads)
    return summary


def _with_metadata(previous: pd.DataFrame, added: pd.DataFrame, test_of: pd.DataFrame):
    """(the previous version's rows, the added rows), both with the metadata columns (date, place,
    side; flukeline.data.metadata) that either the previous version or the run's test table has:
    the catalogue keeps what was recorded with each photo, and the next ingest reads it back."""
    renamed = previous.rename(columns=column_map(c for c in previous.columns if c not in CATALOGUE_COLUMNS))
    columns = [c for c in METADATA_COLUMNS if c in renamed.columns or c in test_of.columns]
    previous = renamed[CATALOGUE_COLUMNS + [c for c in columns if c in renamed.columns]].copy()
    added = added.copy()
    for column in columns:
        if column not in previous:
            previous[column] = ""
        if column in test_of.columns:
            values = test_of[column].reindex(added["Image"])
            added[column] = ["" if pd.isna(v) else str(v) for v in values]
        else:
            added[column] = ""
    return previous[CATALOGUE_COLUMNS + columns], added[CATALOGUE_COLUMNS + columns]


def _checked_rows(export: pd.DataFrame, decisions_path: Path, known: _Known) -> tuple[list[dict], list[str]]:
    """(the export's confirmed rows, every problem found with its file and line); unsure rows are
    checked for their decision and duplicates only."""
    problems, rows, seen = [], [], {}
    for position, row in enumerate(export.itertuples(index=False)):
        line = csv_line(decisions_path, position)
        image, decision, given = row.Image.strip(), row.decision.strip(), row.Id.strip()
        if decision not in DECISIONS:
            problems.append(f"{line}: decision {decision!r} for photo {image!r} is none of {', '.join(DECISIONS)}")
            continue
        if image in seen:
            problems.append(f"{line}: photo {image!r} is listed twice (first on line {seen[image] + 2})")
            continue
        seen[image] = position
        if decision == "unsure":
            continue
        problem = _photo_problem(image, known) or _id_problem(image, decision, given, known)
        if problem:
            problems.append(f"{line}: {problem}")
            continue
        encounter = ""
        if ENCOUNTER in known.test_of:
            value = known.test_of.at[image, ENCOUNTER]
            encounter = "" if pd.isna(value) else str(value).strip()
        photo = Path(known.test_of.at[image, "path"])
        rows.append(
            {"line": line, "Image": image, "decision": decision, "given": given, "encounter": encounter, "photo": photo}
        )
    return rows, problems


def _photo_problem(image: str, known: _Known) -> str | None:
    """Why a confirmed photo cannot enter the catalogue (None: it can)."""
    if image not in known.test_of.index:
        return f"photo {image!r} is no test photo of this run ({known.test_path})"
    if image in known.in_catalogue:
        earlier = known.previous.iloc[known.in_catalogue[image]]
        return (
            f"photo {image!r} is already in the catalogue ({known.versions[-1].name} line"
            f" {known.in_catalogue[image] + 2}, as {earlier['Id']})"
        )
    if image in known.train_images:
        return f"photo {image!r} has the name of a training photo ({known.train_path})"
    photo = Path(known.test_of.at[image, "path"])
    if not photo.is_file():
        return f"photo {image!r} is missing at {photo}"
    if "sha1" in known.test_of and sha1_of(photo) != known.test_of.at[image, "sha1"]:
        return f"photo {image!r} at {photo} has changed since this run read it (sha1 differs)"
    return None


def _id_problem(image: str, decision: str, given: str, known: _Known) -> str | None:
    """Why the id a row gives cannot stand (None: it can): a match names a known individual, a
    named new individual an id nobody uses."""
    if decision == "match":
        if given in ("", NEW_WHALE):
            return f"match for photo {image!r} names no individual (Id {given!r})"
        if given not in known.ids:
            return (
                f"match for photo {image!r} names {given!r}, which is no known individual"
                f" (not in {known.train_path} nor the catalogue)"
            )
    elif given not in ("", NEW_WHALE) and given in known.ids:
        where = "the catalogue" if given in known.catalogue_ids else str(known.train_path)
        return f"new individual {given!r} for photo {image!r}: that id is already used for another animal (in {where})"
    return None


def new_animal(given: str, encounter: str, image: str) -> tuple[str, str]:
    """Which animal a photo of a new individual shows, as (kind, key): the provisional group of
    the decide rule (new_0001 ...: match/new_groups.py), an id the row names itself, else its
    encounter (photos of one animal on one day), else the photo alone."""
    if PROVISIONAL.match(given):
        return ("group", given)
    if given not in ("", NEW_WHALE):
        return ("named", given)
    return ("encounter", encounter) if encounter else ("photo", image)


def _assign_ids(rows: list[dict], known_ids: set, prefix: str) -> None:
    """Each row's final Id: a match keeps its id; one new animal per encounter (or per photo
    without one) gets one fresh id; a named new animal is one across rows."""
    animal_of = {}
    for r in rows:
        if r["decision"] == "new":
            r["animal"] = new_animal(r["given"], r["encounter"], r["Image"])
            animal_of.setdefault(r["animal"], None)
    unnamed = [a for a in animal_of if a[0] != "named"]
    named = {a[1] for a in animal_of if a[0] == "named"}
    for animal, fresh in zip(unnamed, fresh_ids(len(unnamed), known_ids | named, prefix)):
        animal_of[animal] = fresh
    for r in rows:
        r["Id"] = r["given"] if r["decision"] == "match" else (animal_of[r["animal"]] or r["given"])


def _encounter_conflicts(rows: list[dict]) -> list[str]:
    """Photos of one encounter are one animal: each one given another id is a problem."""
    problems, by_encounter = [], {}
    for r in rows:
        if r["encounter"]:
            first = by_encounter.setdefault(r["encounter"], r)
            if first["Id"] != r["Id"]:
                problems.append(
                    f"{r['line']}: photo {r['Image']!r} shares encounter {r['encounter']!r} with {first['Image']!r}"
                    f" ({first['line']}) but is given another individual ({r['Id']} vs {first['Id']})"
                )
    return problems


def _copy_photos(rows: list[dict], photos_dir: Path) -> None:
    photos_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        target = photos_dir / r["Image"]
        if target.exists():
            # Left by an accept that stopped before writing its version: reused when it is the same file.
            if sha1_of(target) != sha1_of(r["photo"]):
                raise InputError(f"{target} exists and differs from {r['photo']}: not overwritten; move it away first")
        else:
            shutil.copy2(r["photo"], target)


def _add_to_gallery(gallery_dir, added: pd.DataFrame, catalogue_dir: Path, threads: int) -> int:
    """The accepted photos (their catalogue copies) as sightings of their ids in the gallery;
    the catalogue version is written first, so a refused sighting loses no decision."""
    from flukeline.gallery.sightings import add_sightings

    count = 0
    for identity, rows in added.groupby("Id", sort=True):
        sightings = add_sightings(gallery_dir, [catalogue_dir / path for path in rows["path"]], identity, threads)
        count += sightings["sha1"].nunique()  # one row per photo and member
    return count
