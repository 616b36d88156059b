"""The text of a user's CSV: UTF-8 (with or without the BOM Excel writes) as is; any other encoding
detected by charset-normalizer, read with a warning naming it; an error saying how to save the
file as UTF-8 when the encoding cannot be told for sure.

Why the photos decide: a spreadsheet saved by Excel on Windows is in the machine's "ANSI" code
page (cp1252 in Western Europe and the Americas). On a few short file names charset-normalizer
finds several encodings equally plausible (cp1252 reads byte 0xEB as `ë`, cp1257 as `ė`, and both
are clean text), so its best guess alone is a coin toss. The names in the `Image` column must be
photos on disk: the reading under which the most of them exist is the right one. Without photos
to check, several readings that give different text are an error, not a guess.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from flukeline.core.errors import InputError

logger = logging.getLogger(__name__)

SAVE_AS_UTF8 = (
    "save it as UTF-8 and run again: in Excel, File > Save As > 'CSV UTF-8 (Comma delimited)'; in LibreOffice"
    " Calc, Save As > 'Text CSV' with 'Edit filter settings' ticked and character set 'Unicode (UTF-8)'"
)
# Named first among encodings that give the same text: what Excel writes on Western Windows.
_FAMILIAR = ("cp1252", "latin_1")

# path, mtime, size -> text: ingest reads train.csv twice (rows, then encounters), and the second
# read must neither warn again nor decide differently.
_decoded: dict[tuple[str, int, int], str] = {}


def csv_text(path: str | os.PathLike, image_folders: Sequence[str | os.PathLike] = ()) -> str:
    """The decoded text of the CSV at `path`. `image_folders`: where the photos its `Image` column
    names are, to choose among encodings that give different names (see the module's docstring)."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _decoded:
            return _decoded[key]
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _detected_text(path, data, [Path(folder) for folder in image_folders])
    _decoded[key] = text
    return text


def _detected_text(path: Path, data: bytes, image_folders: list[Path]) -> str:
    from charset_normalizer import from_bytes

    # Each match is one distinct text, with every encoding that decodes the bytes to it.
    readings = [(_encodings(match), str(match)) for match in from_bytes(data)]
    if not readings:
        raise InputError(f"{path}: not UTF-8, and no text encoding reads it cleanly (is it a CSV?); {SAVE_AS_UTF8}")
    if len(readings) == 1:
        encodings, text = readings[0]
        evidence = ""
    else:
        found = [_photos_found(text, image_folders) for _, text in readings]
        best = max(found)
        if not image_folders or best == 0 or found.count(best) > 1:
            raise InputError(
                f"{path}: not UTF-8, and its encoding cannot be told for sure ({_alternatives(readings)}); "
                + SAVE_AS_UTF8
            )
        encodings, text = readings[found.index(best)]
        evidence = f"; {best} of its Image names are photos on disk under that reading, fewer under the others"
    same = f" (the same text as {', '.join(encodings[1:4])})" if len(encodings) > 1 else ""
    logger.warning(
        "%s is not UTF-8: read as %s%s, detected by charset-normalizer%s. To silence this warning, %s",
        path,
        encodings[0],
        same,
        evidence,
        SAVE_AS_UTF8,
    )
    return text


def _encodings(match) -> list[str]:
    """The match's encodings, the familiar Windows one first when it is among them."""
    encodings = list(dict.fromkeys([match.encoding, *match.could_be_from_charset]))
    familiar = [name for name in _FAMILIAR if name in encodings]
    return familiar + [name for name in encodings if name not in familiar]


def _photos_found(text: str, image_folders: list[Path]) -> int:
    """How many of the text's non-ASCII Image cells (the only ones the readings differ on) name a
    file in one of the folders; 0 when it does not parse as a CSV with an Image column."""
    import pandas as pd

    try:
        names = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).get("Image")
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return 0
    if names is None:
        return 0
    names = [name.strip() for name in names if not name.isascii()]
    return sum(any((folder / name).is_file() for folder in image_folders) for name in names)


def _alternatives(readings: list[tuple[list[str], str]]) -> str:
    """The first line where the readings differ, as each of the first three reads it."""
    lines = [text.splitlines() for _, text in readings[:3]]
    row = next((i for i in range(min(map(len, lines))) if len({line[i] for line in lines}) > 1), 0)
    return "; ".join(
        f"as {encodings[0]}, line {row + 1} reads {text.splitlines()[row]!r}" for encodings, text in readings[:3]
    )
