"""The two folder shapes `flukeline init` accepts, and the conversion of the second into the first.

- Kaggle layout: train.csv (Image,Id) + train/ + test/ (optional sample_submission.csv): read in
  place.
- One subfolder per individual: `<folder>/<individual>/*.jpg`, the subfolder's name the identity;
  a subfolder named `new_whale` (or the user's word for an unknown animal) holds unknown animals,
  and the photos to identify are a `test/` subfolder of loose photos or the folder given as
  `test`. Converted into a new Kaggle-layout folder: photos hard-linked where the file system
  allows (no copy, no space), copied otherwise; never symbolic links, which ingest refuses.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import PHOTO_SUFFIXES
from flukeline.core.io import write_csv_atomic
from flukeline.core.metrics import NEW_WHALE

TEST_FOLDER = "test"


@dataclass(frozen=True)
class Layout:
    """A Kaggle-layout folder, and how it was made: `converted_from` is the per-individual folder
    it was made from (None: the user's own Kaggle layout); `renamed` maps folder names to the Ids
    they became where they had to change."""

    root: Path
    converted_from: Path | None = None
    renamed: tuple[tuple[str, str], ...] = ()


def is_kaggle_layout(folder: Path) -> bool:
    return (folder / "train.csv").is_file()


def photos_in(folder: Path) -> list[Path]:
    """The photos directly in `folder` (by name: PHOTO_SUFFIXES), sorted."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES)


def identity_folders(folder: Path, test: Path | None) -> dict[Path, list[Path]]:
    """Each individual's subfolder and its photos (subfolders without photos, and the test
    folder, left out)."""
    subfolders = sorted(path for path in folder.iterdir() if path.is_dir())
    found = {sub: photos_in(sub) for sub in subfolders if sub.name != TEST_FOLDER and sub.resolve() != test}
    return {sub: photos for sub, photos in found.items() if photos}


def as_id(name: str, new_labels: set[str]) -> str:
    """A folder name as an Id: the submission separates ids by spaces and the CSV by commas, so
    runs of spaces and commas become one underscore; an unknown-animal folder is new_whale."""
    if name.strip() in new_labels:
        return NEW_WHALE
    return re.sub(r"[\s,]+", "_", name.strip()).strip("_") or "_"


def find_layout(
    folder: str | os.PathLike, out: str | os.PathLike | None, test: str | os.PathLike | None, new_label: str
) -> Layout:
    """`folder` as a Kaggle layout: as it is, or converted into `out` (default: `<folder>-kaggle`
    beside it) from one subfolder per individual."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist or is not a folder")
    if is_kaggle_layout(folder):
        if test is not None:
            raise InputError(
                f"{folder} is a Kaggle layout (train.csv): its test photos are its test/ folder; drop --test"
            )
        return Layout(root=folder)
    test_folder = Path(test).expanduser().resolve() if test is not None else folder / TEST_FOLDER
    if test is not None and not test_folder.is_dir():
        raise InputError(f"--test {test_folder} does not exist or is not a folder")
    individuals = identity_folders(folder, test_folder.resolve())
    if not individuals:
        raise InputError(
            f"{folder} is neither a Kaggle layout (train.csv, train/, test/) nor a folder with one subfolder of"
            f" photos ({', '.join(PHOTO_SUFFIXES[:6])}, ...) per individual"
        )
    out = Path(out).expanduser().resolve() if out is not None else folder.with_name(folder.name + "-kaggle")
    return convert(folder, individuals, test_folder, out, {new_label, NEW_WHALE})


def convert(
    folder: Path, individuals: dict[Path, list[Path]], test_folder: Path, out: Path, new_labels: set[str]
) -> Layout:
    """Write the Kaggle layout into `out` (which must not exist yet: nothing of the user's is
    overwritten). Train photos are named `<Id>-<file name>` (two individuals may both have an
    IMG_0001.jpg); test photos keep their names."""
    if out.exists():
        raise InputError(f"{out} exists already: give another --out (init never overwrites a folder)")
    ids = {sub: as_id(sub.name, new_labels) for sub in individuals}
    merged = [name for name in set(ids.values()) if list(ids.values()).count(name) > 1 and name != NEW_WHALE]
    if merged:
        clashing = sorted(sub.name for sub, name in ids.items() if name in merged)
        raise InputError(f"subfolders {clashing} of {folder} become the same Id: rename one of them")
    (out / "train").mkdir(parents=True)
    (out / TEST_FOLDER).mkdir()
    rows = []
    for sub, photos in individuals.items():
        for photo in photos:
            name = f"{ids[sub]}-{photo.name}"
            _link_or_copy(photo, out / "train" / name)
            rows.append({"Image": name, "Id": ids[sub]})
    tests = photos_in(test_folder) if test_folder.is_dir() else []
    for photo in tests:
        _link_or_copy(photo, out / TEST_FOLDER / photo.name)
    write_csv_atomic(pd.DataFrame(rows, columns=["Image", "Id"]), out / "train.csv")
    renamed = tuple(sorted((sub.name, name) for sub, name in ids.items() if sub.name != name))
    return Layout(root=out, converted_from=folder, renamed=renamed)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links (or read-only sources)
        shutil.copy2(source, target)
