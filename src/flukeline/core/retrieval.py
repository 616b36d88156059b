"""Search and new_whale-threshold primitives shared by embed's validation, the match stage and the
gallery: L2 normalisation, identity centres, FAISS inner-product top-k (exact, or HNSW above
`ann_above` vectors), new_whale inserted before the first candidate below the threshold, MAP@5 at
every threshold of a grid at once, and the best threshold on the config's grid. They live in core
so that embed scores a fold the way match calibrates without importing match."""

from __future__ import annotations

import faiss
import numpy as np

from flukeline.core.metrics import NEW_WHALE


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def identity_centres(embeddings: np.ndarray, ids) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each identity's normalised embeddings, normalised again. Returns (ids, centres)."""
    ids = np.asarray(ids)
    names, inverse = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(names), embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, l2_normalise(embeddings))
    return names, l2_normalise(sums)


def build_index(gallery: np.ndarray, ann_above: int | None = None, hnsw_m: int = 32, ef_search: int = 128):
    """Exact inner-product index, or HNSW (inner-product metric) for galleries above `ann_above`
    vectors, where exact search stops being cheap (bench/bench_search.py measures both)."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    if ann_above is not None and len(gallery) > ann_above:
        index = faiss.IndexHNSWFlat(gallery.shape[1], int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(ef_search)
    else:
        index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    return index


def search(queries: np.ndarray, gallery: np.ndarray, k: int, **index_options) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product (cosine for normalised vectors) with FAISS."""
    index = build_index(gallery, **index_options)
    sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(gallery)))
    return sims, idx


def rank_with_new_whale(candidate_ids, candidate_sims, threshold: float, k: int = 5) -> list[list[str]]:
    """Per query: candidates in order of similarity with new_whale inserted before the first
    candidate whose similarity is below the threshold (or last, if none is), truncated to k."""
    ranked = []
    for ids, sims in zip(candidate_ids, candidate_sims):
        below = np.flatnonzero(np.asarray(sims) < threshold)
        cut = int(below[0]) if len(below) else len(ids)
        ranked.append((list(ids[:cut]) + [NEW_WHALE] + list(ids[cut:]))[:k])
    return ranked


def map5_by_threshold(
    truth, candidate_ids: np.ndarray, candidate_sims: np.ndarray, thresholds, k: int = 5, weights=None
) -> np.ndarray:
    """MAP@k of `rank_with_new_whale` for every threshold at once, without building the lists;
    with `weights` (one per query), the weighted mean of the queries' average precisions.

    candidate_ids/sims: Q x C top candidates per query, similarity descending. new_whale lands at
    rank `cut` = number of candidates with similarity >= threshold; a known truth found at
    candidate position p ranks p before the cut and p + 1 after it."""
    truth = np.asarray(truth)
    candidate_ids = np.asarray(candidate_ids)[:, :k]
    candidate_sims = np.asarray(candidate_sims, dtype=np.float64)[:, :k]
    hits = candidate_ids == truth[:, None]
    position = np.where(hits.any(axis=1), hits.argmax(axis=1), k + 1)  # k + 1: not among them
    is_new = truth == NEW_WHALE
    scores = []
    for threshold in np.asarray(thresholds, dtype=np.float64):
        cut = (candidate_sims >= threshold).sum(axis=1)
        rank = np.where(is_new, cut, np.where(position < cut, position, position + 1))
        precision = np.where(rank < k, 1.0 / (rank + 1), 0.0)
        scores.append(np.average(precision, weights=weights) if len(truth) else float("nan"))
    return np.asarray(scores)


def threshold_grid(grid) -> np.ndarray:
    """The new_whale thresholds to try, from match.threshold_grid's (low, high, step) (its default
    lives in flukeline.match.settings.RankingSettings; embed receives the value in its params)."""
    low, high, step = grid
    return np.round(np.arange(low, high + step / 2, step), 6)


def best_threshold(
    truth, candidate_ids: np.ndarray, candidate_sims: np.ndarray, grid, k: int = 5, weights=None
) -> tuple[float, float, np.ndarray]:
    """(threshold, its MAP@k, MAP@k at every grid point): the new_whale threshold maximising MAP@k
    (weighted by `weights` per query, if given) over `grid` (ties: the lowest). The match stage
    calibrates with it and the embed stage's validation (best epoch, early stopping) scores with
    it, on the same config grid, so both optimise the same decision."""
    grid = np.asarray(grid, dtype=np.float64)
    scores = map5_by_threshold(truth, candidate_ids, candidate_sims, grid, k, weights)
    best = int(np.nanargmax(scores))
    return float(grid[best]), float(scores[best]), scores
