"""Confirmed sightings of a gallery, sightings.parquet: reading it, `flukeline add` (new photos
of a known individual join the templates without retraining; a photo is stored once, under one
id) and re-embedding the added sightings when the gallery's models changed."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.local_matching import GalleryLocal, SightingFeatures
from flukeline.gallery.manifest import read_manifest
from flukeline.gallery.photos import embed_photos, member_key, photo_views

log = logging.getLogger(__name__)

SIGHTINGS = "sightings.parquet"


def sightings_path(manifest: dict) -> Path:
    return Path(manifest["folder"]) / SIGHTINGS


def read_sightings(manifest: dict) -> pd.DataFrame:
    path = sightings_path(manifest)
    if not path.is_file():
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in [
                    ("photo", "str"),
                    ("sha1", "str"),
                    ("id", "str"),
                    ("added", "str"),
                    ("member", "str"),
                    ("model_key", "str"),
                    ("embedding", "object"),
                ]
            }
        )
    return pd.read_parquet(path)


def file_sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def current_sightings(manifest: dict, threads: int = 1) -> pd.DataFrame:
    """Added sightings, re-embedded (and saved) for any member whose models changed since."""
    table = read_sightings(manifest)
    if table.empty:
        return table
    keys = {m["name"]: member_key(m, manifest) for m in manifest["members"]}
    stale = table[table["model_key"] != table["member"].map(keys)]
    photos = table.drop_duplicates("sha1")
    missing_member = [name for name in keys if name not in set(table["member"])]
    if stale.empty and not missing_member:
        return table
    log.info("re-embedding %d added sightings: the gallery's models changed", len(photos))
    for photo in photos["photo"]:
        if not Path(photo).is_file():
            raise InputError(
                f"{photo}: an added sighting whose photo is gone; the gallery's models changed, so it "
                f"must be embedded again: restore the photo or remove it from {sightings_path(manifest)}"
            )
    images, vectors = embed_photos(photos["photo"].tolist(), manifest, threads)
    table = sighting_rows(
        photos["photo"].tolist(),
        photos["sha1"].tolist(),
        photos["id"].tolist(),
        photos["added"].tolist(),
        vectors,
        keys,
    )
    write_parquet_atomic(table, sightings_path(manifest))
    return table


def sighting_rows(photos, sha1s, ids, added, vectors: dict[str, np.ndarray], keys: dict[str, str]) -> pd.DataFrame:
    rows = []
    for member, matrix in vectors.items():
        for photo, sha1, id_, when, vector in zip(photos, sha1s, ids, added, matrix):
            rows.append((photo, sha1, id_, when, member, keys[member], vector.astype(np.float32)))
    return pd.DataFrame(rows, columns=["photo", "sha1", "id", "added", "member", "model_key", "embedding"])


def add_sightings(gallery, photos, identity: str, threads: int = 1) -> pd.DataFrame:
    """Add confirmed sightings of `identity`; the templates include them from the next identify
    on (no retraining). A photo already in the gallery under the same id is skipped; under
    another id it is refused."""
    identity = str(identity).strip()
    if not identity or identity == NEW_WHALE:
        raise InputError(f"--id must name a known individual, not {identity!r}")
    manifest = read_manifest(gallery)
    table = current_sightings(manifest, threads)
    known = dict(zip(table["sha1"], table["id"]))
    fresh, sha1s = [], []
    for photo in photos:
        if not Path(photo).is_file():
            raise InputError(f"{photo}: no such photo")
        sha1 = file_sha1(photo)
        if sha1 in known and known[sha1] != identity:
            raise InputError(f"{photo}: already in the gallery as {known[sha1]!r}, not {identity!r}")
        if sha1 in known or sha1 in sha1s:
            log.info("%s: already in the gallery as %s, skipped", photo, identity)
            continue
        fresh.append(photo)
        sha1s.append(sha1)
    if not fresh:
        return table.iloc[0:0]
    matcher = GalleryLocal.of(manifest)
    views = photo_views(fresh, manifest, threads, matcher)
    images, vectors = views.images, views.vectors
    if matcher is not None:  # the photos' local features, for identify's local matcher
        store = SightingFeatures(manifest["folder"], matcher)
        for sha1, features in zip(sha1s, views.local):
            store.put(sha1, features)
    keys = {m["name"]: member_key(m, manifest) for m in manifest["members"]}
    when = datetime.now(UTC).isoformat(timespec="seconds")
    rows = sighting_rows(images["path"].tolist(), sha1s, [identity] * len(fresh), [when] * len(fresh), vectors, keys)
    write_parquet_atomic(pd.concat([table, rows], ignore_index=True) if len(table) else rows, sightings_path(manifest))
    log.info("added %d sighting(s) of %s to %s", len(fresh), identity, manifest["folder"])
    return rows
