"""Capture histories: individual x occasion, 1 where the individual was photographed in the
occasion, written as Program MARK's encounter-histories file (.inp) and as a tidy CSV, and read
back from both.

MARK's format (as RMark's convert.inp and the MARK help describe it): one record per line, the
encounter history (one character per occasion, here 0 / 1), a frequency field per group (here one
group, each individual its own record with frequency 1), any individual covariates, and a
semicolon that ends the record. Comments go between /* and */; the individual's id is a comment in
front of its record (RMark's `use.comments`). `parse_inp` reads that format back (comments
anywhere, records across lines, a frequency per group and covariates), naming the line of each
problem.

The tidy CSV has one row per individual, occasion and site where it was photographed: session,
individual, occasion (1-based), site, then occasion_label and photos. Its first four columns are
secr's trapID capture format (Session ID Occasion Detector); RMark's `ch` strings are the .inp's
histories."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_atomic
from flukeline.data.metadata import LOCATION

TIDY_COLUMNS = ["session", "individual", "occasion", "site", "occasion_label", "photos"]
SESSION = "1"  # one closed session: secr's Session column


@dataclass(frozen=True)
class CaptureHistories:
    individuals: list[str]  # row order (sorted ids)
    occasions: list[str]  # column order (labels in time order)
    matrix: np.ndarray  # individuals x occasions, uint8 0/1

    def history(self, row: int) -> str:
        return "".join(map(str, self.matrix[row]))


def capture_histories(sightings: pd.DataFrame, occasions: list[str] | None = None) -> CaptureHistories:
    """The histories of sightings with an `individual` and an `occasion` label, over `occasions`
    (the labels in time order; default: those of the sightings). An occasion in which nobody was
    identified is a column of zeros, as MARK reads a sampled occasion without captures."""
    individuals = sorted(sightings["individual"].unique())
    occasions = sorted(sightings["occasion"].unique()) if occasions is None else list(occasions)
    matrix = np.zeros((len(individuals), len(occasions)), np.uint8)
    row = {individual: i for i, individual in enumerate(individuals)}
    column = {occasion: j for j, occasion in enumerate(occasions)}
    for individual, occasion in zip(sightings["individual"], sightings["occasion"]):
        matrix[row[individual], column[occasion]] = 1
    return CaptureHistories(individuals, occasions, matrix)


def _comment(text: str) -> str:
    """`text` safe inside /* */ (a "*/" in an id would end the comment early)."""
    return text.replace("*/", "* /")


def inp_text(histories: CaptureHistories, title: str) -> str:
    lines = [f"/* {_comment(title)} */"]
    lines += [f"/* occasion {j + 1}: {_comment(label)} */" for j, label in enumerate(histories.occasions)]
    lines += [
        f"/* {_comment(individual)} */ {histories.history(i)} 1;" for i, individual in enumerate(histories.individuals)
    ]
    return "\n".join(lines) + "\n"


def write_inp(path, histories: CaptureHistories, title: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(inp_text(histories, title)))


@dataclass(frozen=True)
class InpRecord:
    line: int  # where the record starts (1-based)
    comment: str  # the last comment in front of it ("" without one): the individual's id here
    history: str
    frequencies: tuple[int, ...]
    covariates: tuple[float, ...]


_TOKEN = re.compile(r"/\*|;|[^\s;]+?(?=/\*|;|\s|$)", re.S)


def parse_inp(text: str, name: str = "input.inp", groups: int = 1) -> list[InpRecord]:
    """The records of a MARK encounter-histories file: each history (0, 1 or `.` per occasion,
    all of one length), `groups` integer frequencies, then covariates; an InputError names the
    file, line and problem."""
    records, tokens, comment, start = [], [], "", None
    position = 0

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    while position < len(text):
        match = _TOKEN.search(text, position)
        if match is None:
            break
        token = match.group()
        if token == "/*":
            end = text.find("*/", match.end())
            if end < 0:
                raise InputError(f"{name} line {line_of(match.start())}: a comment /* is never closed with */")
            if not tokens:  # a comment inside a record (between its fields) labels nothing
                comment = text[match.end() : end].strip()
            position = end + 2
            continue
        position = match.end()
        if token == ";":
            if not tokens:
                raise InputError(f"{name} line {line_of(match.start())}: a semicolon ends an empty record")
            records.append(_record(tokens, comment, start, name, groups))
            tokens, comment, start = [], "", None
            continue
        if start is None:
            start = line_of(match.start())
        tokens.append(token)
    if tokens:
        raise InputError(f"{name} line {start}: the last record does not end with a semicolon")
    lengths = {len(record.history) for record in records}
    if len(lengths) > 1:
        first = records[0]
        odd = next(r for r in records if len(r.history) != len(first.history))
        raise InputError(
            f"{name} line {odd.line}: history {odd.history!r} has {len(odd.history)} occasions, line"
            f" {first.line}'s has {len(first.history)}"
        )
    return records


def _record(tokens: list[str], comment: str, line: int, name: str, groups: int) -> InpRecord:
    where = f"{name} line {line}"
    history = tokens[0]
    if not re.fullmatch(r"[01.]+", history):
        raise InputError(f"{where}: encounter history {history!r} is not a string of 0, 1 and .")
    if len(tokens) < 1 + groups:
        raise InputError(f"{where}: {len(tokens) - 1} frequency field(s), {groups} group(s) expected")
    try:
        frequencies = tuple(int(token) for token in tokens[1 : 1 + groups])
    except ValueError:
        raise InputError(f"{where}: frequencies {tokens[1 : 1 + groups]} are not all integers") from None
    try:
        covariates = tuple(float(token) for token in tokens[1 + groups :])
    except ValueError:
        raise InputError(f"{where}: covariates {tokens[1 + groups :]} are not all numbers") from None
    return InpRecord(line, comment, history, frequencies, covariates)


def read_inp(path, groups: int = 1) -> list[InpRecord]:
    path = Path(path)
    return parse_inp(path.read_text(), path.name, groups)


def tidy_table(sightings: pd.DataFrame, histories: CaptureHistories) -> pd.DataFrame:
    """One row per individual, occasion and site (site "" when the photos have no location)."""
    number = {label: j + 1 for j, label in enumerate(histories.occasions)}
    grouped = (
        sightings.assign(site=sightings[LOCATION].fillna(""))
        .groupby(["individual", "occasion", "site"], sort=False)
        .size()
        .rename("photos")
        .reset_index()
    )
    table = pd.DataFrame(
        {
            "session": SESSION,
            "individual": grouped["individual"],
            "occasion": grouped["occasion"].map(number).astype(int),
            "site": grouped["site"],
            "occasion_label": grouped["occasion"],
            "photos": grouped["photos"].astype(int),
        }
    )
    return table.sort_values(["individual", "occasion", "site"]).reset_index(drop=True)[TIDY_COLUMNS]


def histories_from_tidy(table: pd.DataFrame, occasions: list[str]) -> CaptureHistories:
    """The capture histories a tidy table holds over `occasions` (labels in order; the table
    lists only occasions with a capture); its occasion numbers must be those labels' places."""
    for row in table.itertuples(index=False):
        if not 1 <= int(row.occasion) <= len(occasions) or occasions[int(row.occasion) - 1] != str(row.occasion_label):
            raise InputError(
                f"capture histories CSV: occasion {row.occasion} labelled {row.occasion_label!r}, not an occasion"
                f" among {occasions}"
            )
    sightings = pd.DataFrame({"individual": table["individual"].astype(str), "occasion": table["occasion_label"]})
    return capture_histories(sightings, occasions)
