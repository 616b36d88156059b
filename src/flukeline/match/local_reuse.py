"""The local member's per-query results kept across runs (results/cache/local_match, through
core.photo_cache.PhotoCache), so that a new season's rerun votes and matches only its new queries:
its validation queries (every known training photo) are those of the last run, and redoing them
was most of the rerun's time (the LNBNN votes: bench/results/scale.md).

Why the reuse is exact, not approximate: the LNBNN index is the training catalogue's known photos
(local_shortlist.catalogue_index), and a validation query votes over it without its own fold. A
new season's photos are test photos, i.e. queries only: they add nothing to the index. So while
the catalogue's known photos, their ids, folds and descriptors are the same, every validation
query's K + 1 neighbours, its normalisers and its votes are the same numbers; `catalogue_key`
hashes exactly that (and the index settings), and each query's votes are stored under it, its
descriptors' SHA-1 and its excluded fold (`vote_cache`). When a photo joins the catalogue (an
accepted season through data.catalogue, new training photos) the key changes and every query
votes again: LNBNN's normaliser is the (K+1)-th neighbour over the whole catalogue, so an old
vote is no longer the vote a full recomputation would give (the IVF index above
match.local.exact_below is even retrained on a new sample).

The index itself is kept too (`kept_index`, results/cache/local_match/index/, named by the same
key): at 25,361 catalogue photos (1.3M descriptors) its IVF training and adds took 33 s of the
season's rerun, a load takes a second. Only the newest index is kept (one is hundreds of MB).

A pair's score (ratio-test matches, MAGSAC inliers, the review page's inlier points, each inlier's
query feature and LNBNN weight) is a function of the two photos' features, the query's normalisers
and the matcher's settings only (`PairStore`): one entry per query, under its features, its
normalisers and whether its points are kept, holding its pairs by the gallery photo's features.
A pair is reused whenever all of these are the same, whatever else changed (another round's
shortlist, another catalogue that left this query's normalisers as they were).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.photo_cache import PhotoCache
from flukeline.match.local_index import DescriptorIndex, QueryVotes, index_settings

log = logging.getLogger(__name__)

# The score columns of a pair (pair_scoring.SCORE_COLUMNS) that are arrays of varying length.
RAGGED = ("query_xy", "gallery_xy", "evidence_features", "evidence_weights")
RAGGED_DTYPES = (np.float32, np.float32, np.int32, np.float32)


def array_digest(*arrays) -> str:
    """SHA-1 of arrays' dtypes, shapes and bytes (None counts as absent)."""
    digest = hashlib.sha1()
    for array in arrays:
        if array is None:
            digest.update(b"none|")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def catalogue_key(known: pd.DataFrame, features, settings) -> str:
    """What the LNBNN index and every vote over it depend on: the catalogue's known photos in the
    index's input order (image, id, fold: local_shortlist.known_photos), each photo's descriptors,
    and the index settings (local_index.index_settings)."""
    digest = hashlib.sha1(json.dumps(index_settings(settings), sort_keys=True).encode())
    for image, identity, fold in zip(known["image"], known["id"], known["fold"]):
        digest.update(f"\n{image}|{identity}|{int(fold)}|".encode())
        digest.update(array_digest(features.get(image)[1]).encode())
    return digest.hexdigest()


def kept_index(index_dir, catalogue: str, build, threads: int = 1) -> DescriptorIndex:
    """The catalogue's LNBNN index: loaded from `index_dir/<catalogue key>.npz` when an earlier
    run (or gallery call) built it over the same catalogue, else build() and kept there (older
    indexes removed). A damaged file is rebuilt with a warning. catalogue: a key of everything
    the index depends on (catalogue_key; a gallery's own)."""
    path = Path(index_dir) / f"{catalogue[:20]}.npz"
    if path.is_file():
        try:
            index = DescriptorIndex.load(path, threads)
            log.info("catalogue index: kept from an earlier run over the same catalogue (%s)", path)
            return index
        except (OSError, ValueError, KeyError) as error:  # a damaged file is only lost time
            log.warning("catalogue index: rebuilding over the unreadable %s (%s)", path, error)
    index = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("*.npz"):
        old.unlink(missing_ok=True)
    index.write(path)
    log.info("catalogue index saved to %s", path)
    return index


def vote_cache(cache_dir, catalogue: str) -> PhotoCache:
    """The votes over one catalogue (catalogue_key); off where cache_dir is None."""
    return PhotoCache(cache_dir, "local_votes", catalogue)


def votes_arrays(votes: QueryVotes) -> dict[str, np.ndarray]:
    """A query's votes as a cache entry: the scores' non-zero entries (a query's K votes per
    descriptor reach a few photos of a 25k catalogue) and its normalisers, all exact."""
    identities, photos = np.flatnonzero(votes.identity_scores), np.flatnonzero(votes.photo_scores)
    return {
        "n": np.array([len(votes.identity_scores), len(votes.photo_scores), votes.descriptors], np.int64),
        "identity_positions": identities.astype(np.int64),
        "identity_scores": votes.identity_scores[identities],
        "photo_positions": photos.astype(np.int64),
        "photo_scores": votes.photo_scores[photos],
        "normalisers": votes.normalisers,
    }


def votes_from_arrays(entry: dict[str, np.ndarray], exclude_fold: int | None = None) -> QueryVotes:
    """The votes votes_arrays stored, with the fold the query excluded (the shortlist leaves that
    fold's photos out: without it a cached validation query would be shortlisted against itself)."""
    n_ids, n_photos, descriptors = (int(v) for v in entry["n"])
    identity_scores, photo_scores = np.zeros(n_ids, np.float64), np.zeros(n_photos, np.float64)
    identity_scores[entry["identity_positions"]] = entry["identity_scores"]
    photo_scores[entry["photo_positions"]] = entry["photo_scores"]
    return QueryVotes(identity_scores, photo_scores, descriptors, entry["normalisers"], exclude_fold)


def cached_query(index, cache: PhotoCache | None, descriptors: np.ndarray, fold: int | None) -> QueryVotes:
    """index.query through the vote cache (by the query's descriptors and excluded fold)."""
    if cache is None or not cache.enabled:
        return index.query(descriptors, exclude_fold=fold)
    key = cache.key(array_digest(descriptors), fold)
    found = cache.get(key)
    if found is not None:
        return votes_from_arrays(found, fold)
    votes = index.query(descriptors, exclude_fold=fold)
    cache.put(key, **votes_arrays(votes))
    return votes


class PairStore:
    """Scored pairs per query (module docstring). `settings`: everything of the matcher's that a
    score depends on (method, pair settings, crop size); a query's key adds its features, its
    normalisers and whether its points are kept; within an entry a pair is found by the gallery
    photo's features (and frame)."""

    def __init__(self, cache_dir, settings: dict):
        self.cache = PhotoCache(cache_dir, "local_pairs", settings)
        self.reused = 0
        self.scored = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    def query_key(self, features: tuple, frame, normalisers, keep_points: bool) -> str:
        return self.cache.key(array_digest(*features, frame), array_digest(normalisers), bool(keep_points))

    def lookup(self, key: str) -> dict[str, tuple]:
        """gallery key -> the pair's score columns (pair_scoring.SCORE_COLUMNS), of one query."""
        entry = self.cache.get(key)
        if entry is None:
            return {}
        offsets = {name: entry[f"{name}_offsets"] for name in RAGGED}
        rows = {}
        for i, gallery in enumerate(entry["gallery"]):
            ragged = [entry[name][offsets[name][i] : offsets[name][i + 1]] for name in RAGGED]
            rows[str(gallery)] = (int(entry["matches"][i]), int(entry["inliers"][i]), *ragged)
        return rows

    def store(self, key: str, rows: dict[str, tuple]) -> None:
        galleries = list(rows)
        arrays = {
            "gallery": np.array(galleries, dtype=str),
            "matches": np.array([rows[g][0] for g in galleries], np.int64),
            "inliers": np.array([rows[g][1] for g in galleries], np.int64),
        }
        for j, (name, dtype) in enumerate(zip(RAGGED, RAGGED_DTYPES), start=2):
            parts = [np.asarray(rows[g][j], dtype).ravel() for g in galleries]
            counts = [len(p) for p in parts]
            arrays[name] = np.concatenate(parts) if parts else np.zeros(0, dtype)
            arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.cache.put(key, **arrays)

    def flush(self) -> None:
        """Write the pairs stored since the last flush (core.photo_cache: entries wait in memory)."""
        self.cache.flush()

    def count(self, reused: int, scored: int) -> None:
        with self._lock:
            self.reused += reused
            self.scored += scored
