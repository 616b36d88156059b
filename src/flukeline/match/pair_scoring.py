"""The local member's pair scores (`score_pairs`): the method's matcher (match/local_matchers.py:
RootSIFT + ratio test, or LightGlue over ALIKED / DISK), then the inliers of a MAGSAC homography.
Streamed query by query (a query's B pairs at a time): only the Q x B pair rows are kept; the
scored pairs are checkpointed beside the outputs (`save_checkpoint`, `resumed_pairs`), so that a
killed job resumes where it was."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flukeline.core.errors import InputError
from flukeline.core.io import write_atomic
from flukeline.core.runtime import parallel_map
from flukeline.match.local_features import LEARNED, LocalFeatures, torch_workers, unmirrored
from flukeline.match.local_index import lnbnn_weights
from flukeline.match.local_matchers import PairMatch, SiftMatcher, make_matcher
from flukeline.match.local_reuse import PairStore, array_digest
from flukeline.match.settings import LocalPairSettings

log = logging.getLogger(__name__)

# Inlier correspondences kept per pair for the review page (and while scoring, to bound memory).
MAX_POINTS = 40
# A running job saves the pairs scored so far beside its outputs this often (seconds); a rerun
# after a kill resumes from there.
CHECKPOINT_SECONDS = 60.0
# What score_pairs adds to each pair: counts, the review page's points, and per inlier its query
# feature and LNBNN weight (empty without normalisers), from which local_tables.identity_evidence
# scores an identity.
SCORE_COLUMNS = ("matches", "inliers", "query_xy", "gallery_xy", "evidence_features", "evidence_weights")


def match_pair(
    query: tuple[np.ndarray, np.ndarray],
    gallery: tuple[np.ndarray, np.ndarray],
    settings: LocalPairSettings | None = None,
) -> tuple[int, int]:
    """(ratio-test matches, MAGSAC homography inliers) of two images' SIFT (xy, descriptors); the
    query's descriptors may already be RootSIFT (float32), the gallery's are the cache's uint8."""
    settings = settings or LocalPairSettings()
    matcher = SiftMatcher(settings.ratio, settings.ransac_threshold)
    return matcher.match(matcher.prepare(*query), gallery).counts()


def crop_size(features: LocalFeatures) -> tuple[int, int]:
    """(W, H) of the crops a cache was extracted from (its `size`, "WxH"); for photo chips
    ("photo<N>") the N x N square their longer side fits in."""
    if str(features.size).startswith("photo"):
        side = int(str(features.size)[len("photo") :])
        return side, side
    try:
        w, h = (int(v) for v in str(features.size).split("x"))
    except ValueError as error:
        raise InputError(f"local features: size {features.size!r} is not WxH") from error
    return w, h


def pairs_key(pairs: pd.DataFrame, features: dict[str, LocalFeatures], settings: LocalPairSettings, method: str) -> str:
    """What a scoring run depends on: a checkpoint is resumed only under the same key."""
    features_keys = {s: f.key for s, f in sorted(features.items())}
    digest = hashlib.sha1(json.dumps([method, settings.to_dict(), features_keys], sort_keys=True).encode())
    for column in ("split", "query", "gallery"):
        digest.update("\n".join(map(str, pairs[column])).encode())
    return digest.hexdigest()


def save_checkpoint(path: Path, rows: pd.DataFrame, key: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"flukeline_key": key.encode()})
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def resumed_pairs(path: Path | None, key: str, ordered: pd.DataFrame) -> pd.DataFrame | None:
    """The scored prefix an interrupted run saved at `path` (same key, same pair order), or None."""
    import pyarrow.parquet as pq

    if path is None or not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:  # a damaged checkpoint is only lost time
        log.warning("local pairs: ignoring the unreadable checkpoint %s (%s)", path, error)
        return None
    if (table.schema.metadata or {}).get(b"flukeline_key", b"").decode() != key:
        log.info("local pairs: the checkpoint %s is of other pairs or settings; starting over", path)
        return None
    done = table.to_pandas()
    head = ordered.iloc[: len(done)]
    if (
        len(done) > len(ordered)
        or not (
            (head["query"].to_numpy() == done["query"].to_numpy()).all()
            and (head["gallery"].to_numpy() == done["gallery"].to_numpy())
        ).all()
    ):
        log.info("local pairs: the checkpoint %s does not continue these pairs; starting over", path)
        return None
    log.info("local pairs: resuming after %d scored pairs from %s", len(done), path)
    return done


def as_fractions(xy: np.ndarray, size: tuple[int, int], frame: np.ndarray | None) -> np.ndarray:
    """Points as fractions of the image the page draws them on: the crop (size W x H), or, for a
    photo chip, the photo (frame: x0, y0, scale, photo width, photo height), flattened."""
    if frame is None:
        return (xy / np.array(size, np.float32)).ravel().astype(np.float32)
    x0, y0, scale, width, height = (float(v) for v in frame)
    photo = xy / scale + np.array([x0, y0], np.float32)
    return (photo / np.array([width, height], np.float32)).ravel().astype(np.float32)


def pair_row(
    match: PairMatch,
    size: tuple[int, int],
    keep_points: bool,
    frames: tuple | None = None,
    normalisers: np.ndarray | None = None,
) -> tuple:
    """A scored pair's columns (SCORE_COLUMNS); the inlier points (at most MAX_POINTS, as fractions
    of the crop's or the photo's width and height: `frames`, the query's and the gallery's photo
    frames) only where the review page reads them; every inlier's query feature and LNBNN weight
    where the query has `normalisers` (its descriptors' LNBNN normalisers) and the matcher gave
    distances."""
    weighted = normalisers is not None and len(match.distances) == match.inliers > 0
    features = match.query_features if weighted else np.zeros(0, np.int32)
    weights = lnbnn_weights(normalisers, features, match.distances) if weighted else np.zeros(0, np.float32)
    if not keep_points or match.inliers == 0:
        empty = np.zeros(0, np.float32)
        return match.matches, match.inliers, empty, empty, features, weights
    query_frame, gallery_frame = frames or (None, None)
    q = as_fractions(unmirrored(match.query_xy[:MAX_POINTS]), size, query_frame)
    g = as_fractions(match.gallery_xy[:MAX_POINTS], size, gallery_frame)
    return match.matches, match.inliers, q, g, features, weights


@dataclass(frozen=True)
class QueryPairs:
    """One query's pairs: its split, its name and its gallery photos, in the pairs' order."""

    split: str
    query: str
    gallery: np.ndarray

    def __len__(self) -> int:
        return len(self.gallery)


def resumed_results(
    groups: list[QueryPairs], ordered: pd.DataFrame, key: str, checkpoint: Path | None
) -> tuple[list[tuple], int, int]:
    """(the scored rows a checkpoint holds, the first query group still to score, the pairs
    before it): whole queries only, so that a run resumes on a query's first pair."""
    done = resumed_pairs(checkpoint, key, ordered)
    results: list[tuple] = [] if done is None else list(zip(*(done[c] for c in SCORE_COLUMNS)))
    first, covered = 0, 0
    while first < len(groups) and covered + len(groups[first]) <= len(results):
        covered += len(groups[first])
        first += 1
    return results[:covered], first, covered


def with_scores(ordered: pd.DataFrame, results: list[tuple]) -> pd.DataFrame:
    """The pairs with their score columns (matches and inliers int32, points float32 arrays)."""
    ordered["matches"] = np.array([r[0] for r in results], dtype=np.int32)
    ordered["inliers"] = np.array([r[1] for r in results], dtype=np.int32)
    ordered["query_xy"] = [np.asarray(r[2], np.float32) for r in results]
    ordered["gallery_xy"] = [np.asarray(r[3], np.float32) for r in results]
    ordered["evidence_features"] = [np.asarray(r[4], np.int32) for r in results]
    ordered["evidence_weights"] = [np.asarray(r[5], np.float32) for r in results]
    return ordered


def score_pairs(
    pairs: pd.DataFrame,
    features: dict[str, LocalFeatures],
    settings: LocalPairSettings,
    threads: int = 1,
    chunk: int = 16,
    method: str | None = None,
    checkpoint: Path | None = None,
    points_for: tuple[str, ...] = ("test",),
    normalisers: Mapping[tuple[str, str], np.ndarray] | None = None,
    queries: Mapping[str, LocalFeatures] | None = None,
    cache_dir=None,
) -> tuple[pd.DataFrame, float]:
    """pairs + matches, inliers and (for the `points_for` splits) the inlier points, streamed:
    `chunk` queries at a time, a progress bar over the pairs; and the seconds it took. Queries run
    on `threads` threads (OpenCV and torch release the GIL; LightGlue as torch_workers says). With
    `checkpoint`, the scored pairs are saved there every CHECKPOINT_SECONDS and a rerun resumes
    from them. `normalisers`: per (split, query) its descriptors' LNBNN normalisers (the catalogue
    index's), which weigh each inlier (pair_row). `queries`: the tables the queries' own features
    are read from ("train" for validation queries, "test") where they differ from the gallery's
    (with_mirrors: each query's features and their mirrors). `cache_dir`: pairs scored by earlier
    runs with the same features, normalisers and settings are read from there, the others put
    there (match/local_reuse.PairStore); the returned table's attrs give `scored_now` (pairs
    matched by this call) and `from_cache`."""
    import cv2

    cv2.setNumThreads(1)  # our threads, not OpenCV's pool on top of them
    method = method or features["train"].method
    size = crop_size(features["train"])
    matcher = make_matcher(method, settings, size)
    width = torch_workers(threads, matcher.device) if method in LEARNED else threads
    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 128), features["train"].descriptors.dtype))

    queries = queries or features

    def lookup(split: str, image: str, tables=features):
        table = tables[split]
        return table.get(image) if image in table else empty

    def frame(split: str, image: str):
        table = features[split]
        if table.frames is None or image not in table:
            return None
        return table.frames[table.position[image]]

    store = PairStore(cache_dir, {"method": method, "settings": settings.to_dict(), "size": list(size)})
    gallery_keys: dict[str, str] = {}

    def gallery_key(image: str) -> str:
        if image not in gallery_keys:  # a race only computes the same key twice
            gallery_keys[image] = array_digest(*lookup("train", image), frame("train", image))
        return gallery_keys[image]

    def one_query(group: QueryPairs) -> list[tuple]:
        split, name = group.split, group.query
        source = "train" if split == "val" else "test"
        own_features = lookup(source, name, queries)
        keep = split in points_for
        own = None if normalisers is None else normalisers.get((split, name))
        key = store.query_key(own_features, frame(source, name), own, keep) if store.enabled else None
        stored = store.lookup(key) if key is not None else {}
        query, rows, new = None, [], 0
        for g in group.gallery:
            found = stored.get(gallery_key(g)) if key is not None else None
            if found is None:
                query = query if query is not None else matcher.prepare(*own_features)
                found = pair_row(
                    matcher.match(query, lookup("train", g)), size, keep, (frame(source, name), frame("train", g)), own
                )
                new += 1
                if key is not None:
                    stored[gallery_key(g)] = found
            rows.append(found)
        if key is not None and new:
            store.store(key, stored)
        store.count(len(rows) - new, new)
        return rows

    # One query's pairs as plain arrays (a DataFrame per query cost seconds at 6,821 queries).
    positions = list(pairs.groupby(["split", "query"], sort=False).indices.values())
    ordered = pairs.iloc[np.concatenate(positions)].reset_index(drop=True) if positions else pairs.iloc[:0].copy()
    splits, names, galleries = (ordered[c].to_numpy() for c in ("split", "query", "gallery"))
    starts = np.cumsum([0] + [len(p) for p in positions])
    groups = [QueryPairs(splits[lo], names[lo], galleries[lo:hi]) for lo, hi in zip(starts[:-1], starts[1:])]
    key = pairs_key(ordered, {**features, **{f"{s} queries": t for s, t in queries.items()}}, settings, method)
    results, first, covered = resumed_results(groups, ordered, key, checkpoint)

    def save() -> None:
        scored = ordered.iloc[: len(results)][["split", "query", "gallery"]].copy()
        for i, column in enumerate(SCORE_COLUMNS):
            scored[column] = [r[i] for r in results]
        save_checkpoint(checkpoint, scored, key)

    start = last_save = time.perf_counter()
    with tqdm(total=len(pairs), initial=covered, desc=f"{method} pairs", mininterval=5) as progress:
        for lo in range(first, len(groups), chunk):
            batch = groups[lo : lo + chunk]
            for scored in parallel_map(one_query, batch, width):
                results.extend(scored)
            progress.update(sum(len(g) for g in batch))
            if checkpoint is not None and time.perf_counter() - last_save >= CHECKPOINT_SECONDS:
                save()
                last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    store.flush()
    ordered = with_scores(ordered, results)
    # Pairs matched by this run (the rest came from a checkpoint or the cache): the honest
    # denominator of its time.
    ordered.attrs["scored_now"] = store.scored
    ordered.attrs["from_cache"] = store.reused
    if store.enabled:
        log.info("local pairs: %d matched now, %d from the cache %s", store.scored, store.reused, cache_dir)
    return ordered, seconds
