"""CSV reading shared by ingest and the annotation readers: every cell a string and empty cells
"" (no NaN guessing: an Id "NA" stays "NA"), required columns checked, unknown columns ignored with
a warning, and row locations given as "<file> line N", N counting the header as line 1 (as editors
do). A file in another encoding than UTF-8 is read through csv_encoding (detected, with a warning)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.data.csv_encoding import csv_text

logger = logging.getLogger(__name__)


def read_csv(
    path: Path, required: Sequence[str], known: Iterable[str] = (), image_folders: Sequence[str | os.PathLike] = ()
) -> pd.DataFrame:
    """All cells as strings, empty cells as "" (no NaN guessing: an Id "NA" stays "NA").
    `image_folders`: where the photos of its Image column are (they decide an unclear encoding)."""
    text = csv_text(path, image_folders)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r} (found columns: {', '.join(map(str, df.columns))})")
    unknown = [column for column in df.columns if column not in (*required, *known)]
    if unknown:
        logger.warning("%s: ignoring unknown column(s) %s", path, ", ".join(map(str, unknown)))
    return df


def csv_line(path: Path, row_position: int) -> str:
    return f"{path.name} line {row_position + 2}"  # +1 for the header, +1 for counting from 1


def read_ingest_table(path, required: Sequence[str], name: str) -> pd.DataFrame:
    """A table ingest wrote beside train.parquet (`name`: duplicates.csv, id_groups.csv), all cells
    strings; an InputError names the file and the problem (missing, unreadable, columns)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (ingest writes {name} beside train.parquet)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (has {list(table.columns)})")
    return table
