"""`flukeline add-season`: a new folder of photos to identify against the existing catalogue, as a
data root the workflow reads like any other, so that the same project folder reruns and computes
only what the new photos need (per-photo caches and stored models in results/cache/, see
flukeline.core.photo_cache and flukeline.core.model_reuse).

The new root (`--out`) holds links, not copies: `train/` links to the catalogue root's `train/`,
`test/` to the new folder, and `train.csv` is the catalogue's (confirmed photos of earlier seasons
come in through `data.catalogue`, as after `flukeline accept`). Annotations (keypoints.csv,
boxes.csv) are copied with only the training photos' rows, since ingest refuses rows naming photos
it does not list; the masks folder is linked. A config file for the next run is written beside
the root: `snakemake --cores 2 --configfile config.yaml <that file>`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import yaml

from flukeline.core.errors import InputError
from flukeline.core.images import PHOTO_SUFFIXES
from flukeline.core.io import write_atomic, write_csv_atomic

log = logging.getLogger(__name__)

# The annotations' places under a data root (the demo's layout; `flukeline annotate` writes the same).
ANNOTATION_PLACES = {
    "masks": "annotations/masks",
    "keypoints": "annotations/keypoints.csv",
    "boxes": "annotations/boxes.csv",
}


def add_season(new_photos, root, out, config_out=None) -> dict:
    """Make the data root `out` for the photos in `new_photos` against the catalogue in `root`;
    write the config that points a run at it (default: <out>.yaml). Returns a summary."""
    new_photos, root, out = Path(new_photos).resolve(), Path(root).resolve(), Path(out).absolute()
    if not (root / "train.csv").is_file() or not (root / "train").is_dir():
        raise InputError(f"{root}: not a catalogue root (train.csv and train/ are needed)")
    if not new_photos.is_dir():
        raise InputError(f"{new_photos}: the new season's photos must be a folder")
    photos = sorted(p.name for p in new_photos.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise InputError(f"{new_photos} holds no photos (JPEG, PNG, HEIC/HEIF, TIFF, WebP, BMP or camera RAW files)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: give a new folder for the season's data root")
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    if "Image" not in train:
        raise InputError(f"{root / 'train.csv'} line 1: no Image column")
    both = sorted(set(photos) & set(train["Image"]))
    if both:
        raise InputError(
            f"{len(both)} new photo(s) have the name of a catalogue photo in {root / 'train.csv'} (e.g. {both[0]!r}):"
            " rename them, or move the catalogue's copy out first"
        )

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "train.csv", lambda tmp: shutil.copyfile(root / "train.csv", tmp))
    os.symlink(root / "train", out / "train", target_is_directory=True)
    os.symlink(new_photos, out / "test", target_is_directory=True)
    annotations = _link_annotations(root, out, set(train["Image"]))
    config = {"data": {"source": "kaggle", "root": str(out), "annotations": annotations}}
    config_out = Path(config_out) if config_out else out.with_name(out.name + ".yaml")
    write_atomic(config_out, lambda tmp: tmp.write_text(yaml.safe_dump(config, sort_keys=False)))
    log.info(
        "new season: %d photos in %s against %d catalogue photos of %s; run it in the same project folder:"
        " snakemake --cores 2 --configfile config.yaml %s",
        len(photos),
        new_photos,
        len(train),
        root,
        config_out,
    )
    return {"n_new": len(photos), "n_catalogue": len(train), "root": str(out), "config": str(config_out)}


def _link_annotations(root: Path, out: Path, train_images: set[str]) -> dict:
    """The catalogue's annotations under `out` (masks linked, CSV rows of training photos only)."""
    found = {}
    for kind, place in ANNOTATION_PLACES.items():
        source = root / place
        if not source.exists():
            found[kind] = None
            continue
        target = out / place
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            os.symlink(source, target, target_is_directory=True)
        else:
            table = pd.read_csv(source, dtype=str, keep_default_na=False)
            write_csv_atomic(table[table["Image"].isin(train_images)], target)
        found[kind] = place
    return found
