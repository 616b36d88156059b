"""Identity templates and their top-k search (`identity_topk`): trimmed centres (3rd place) or
every gallery image, an identity scored by its best image (`match.templates`), searched with FAISS
through flukeline.core.retrieval (exact, HNSW above `match.ann_above`). `fuse_views` concatenates
normalised views (plain + mirrored crop, several fold models) so that one inner product is the
mean of their cosines: flip fusion and fold averaging in one exact search."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import l2_normalise, search
from flukeline.match.settings import SearchSettings

# `templates: images` searches this many nearest images per identity wanted (k x 10): an identity
# scored by its best image needs its images among the nearest, and a query's nearest images are
# often several of one identity; no config key (the workflow never changed it).
IMAGES_PER_IDENTITY_DEPTH = 10


def trimmed_centres(
    embeddings: np.ndarray, ids, min_images: int = 4, drop_share: float = 0.25, repeats: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """3rd place's identity templates: the mean of an identity's normalised embeddings; with at
    least `min_images` images, the farthest `drop_share` (lowest cosine to the mean) is dropped
    and the mean recomputed, once more while more than 3 remain. Returns (ids, centres)."""
    ids = np.asarray(ids)
    vectors = l2_normalise(embeddings)
    names, inverse = np.unique(ids, return_inverse=True)
    centres = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    for position in range(len(names)):  # one pass per identity, vectorised within it
        kept = vectors[order[bounds[position] : bounds[position + 1]]]
        centre = l2_normalise(kept.mean(axis=0, keepdims=True))[0]
        if len(kept) >= min_images:
            for _ in range(repeats):
                if len(kept) <= 3:
                    break
                keep = len(kept) - int(np.floor(drop_share * len(kept)))
                kept = kept[np.argsort(-(kept @ centre), kind="stable")[:keep]]
                centre = l2_normalise(kept.mean(axis=0, keepdims=True))[0]
        centres[position] = centre
    return names, centres


def fuse_views(*views: np.ndarray) -> np.ndarray:
    """Concatenate normalised views (plain + mirrored crop, or several fold models) scaled so that
    the inner product of two fused vectors is the mean of the views' cosines: flip fusion and
    fold averaging become one exact FAISS search."""
    return np.concatenate([l2_normalise(v) for v in views], axis=1) / np.sqrt(len(views))


def identity_topk(
    queries: np.ndarray, gallery: np.ndarray, gallery_ids, k: int, settings: SearchSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best identities (ids, similarities, descending). Templates: trimmed
    centres, or every gallery image with an identity scored by its best image (`templates: images`)."""
    gallery_ids = np.asarray(gallery_ids)
    known = gallery_ids != NEW_WHALE
    index_options = {"ann_above": settings.ann_above, "hnsw_m": settings.hnsw_m, "ef_search": settings.ef_search}
    if settings.templates == "centres":
        centres = settings.centres
        names, vectors = trimmed_centres(
            gallery[known], gallery_ids[known], int(centres.min_images), float(centres.drop_share)
        )
        sims, idx = search(queries, vectors, k, **index_options)
        return pad_candidates(names[np.maximum(idx, 0)], sims, idx < 0, k)
    return best_image_topk(queries, gallery_ids[known], gallery[known], k, index_options)


def best_image_topk(queries: np.ndarray, names, vectors: np.ndarray, k: int, index_options: dict):
    """`templates: images`: every gallery image a template, an identity scored by its best image
    among the IMAGES_PER_IDENTITY_DEPTH x k nearest images."""
    depth = min(len(vectors), k * IMAGES_PER_IDENTITY_DEPTH)
    sims, idx = search(queries, vectors, depth, **index_options)
    long = pd.DataFrame(
        {
            "query": np.repeat(np.arange(len(queries)), sims.shape[1]),
            "id": names[np.maximum(idx, 0)].ravel(),
            "sim": sims.ravel(),
            "valid": (idx >= 0).ravel(),
        }
    )
    best = long[long["valid"]].drop_duplicates(["query", "id"]).groupby("query", sort=True).head(k)
    best = best.assign(rank=best.groupby("query").cumcount())
    ids = np.full((len(queries), k), "", dtype=object)
    out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids[best["query"], best["rank"]] = best["id"]
    out[best["query"], best["rank"]] = best["sim"]
    return pad_candidates(ids, out, ids == "", k)


def pad_candidates(ids, sims, missing, k):
    """Fewer identities than k: empty ids with similarity -inf fill the rest."""
    ids = np.where(missing, "", ids).astype(object)
    sims = np.where(missing, -np.inf, sims).astype(np.float32)
    if ids.shape[1] < k:
        extra = k - ids.shape[1]
        ids = np.concatenate([ids, np.full((len(ids), extra), "", dtype=object)], axis=1)
        sims = np.concatenate([sims, np.full((len(sims), extra), -np.inf, dtype=np.float32)], axis=1)
    return ids, sims
