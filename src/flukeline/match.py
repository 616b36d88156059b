"""Match stage (skeleton): nearest identity centre by cosine similarity, new_whale by threshold."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pandas as pd

from flukeline.folds import validation_truth
from flukeline.metrics import NEW_WHALE

log = logging.getLogger(__name__)


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


def search(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (cosine for normalised vectors) with FAISS."""
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
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


def predict(query_emb, gallery_emb, gallery_ids, threshold: float, k: int = 5):
    """Top-k predicted ids per query and each query's best similarity."""
    known = np.asarray(gallery_ids) != NEW_WHALE
    names, centres = identity_centres(gallery_emb[known], np.asarray(gallery_ids)[known])
    sims, idx = search(l2_normalise(query_emb), centres, k)
    ranked = rank_with_new_whale(names[idx], sims, threshold, k)
    return ranked, sims[:, 0]


def combine_fold_embeddings(per_fold: list[np.ndarray]) -> np.ndarray:
    """Concatenate each fold model's normalised embeddings: the cosine of the result is the mean
    of the fold models' cosines."""
    return l2_normalise(np.concatenate([l2_normalise(e) for e in per_fold], axis=1))


def match_member(train: pd.DataFrame, embeddings: dict[int, pd.DataFrame], params: dict):
    """Validation predictions for every fold (gallery = the other folds) and test predictions
    (gallery = all training images, fold models combined)."""
    threshold = float(params.get("new_whale_threshold", 0.5))
    k = int(params.get("top_k", 5))
    val_rows = []
    for fold, table in sorted(embeddings.items()):
        emb = _embedding_lookup(table)
        in_fold = train["fold"].to_numpy() == fold
        gallery = train[~in_fold]
        queries = train[in_fold]
        truth = validation_truth(train, fold)
        ranked, best = predict(emb(queries["image"], "train"), emb(gallery["image"], "train"), gallery["id"], threshold, k)
        val_rows.append(
            pd.DataFrame(
                {
                    "image": queries["image"].to_numpy(),
                    "fold": fold,
                    "truth": truth.loc[queries["image"]].to_numpy(),
                    "predicted": [" ".join(r) for r in ranked],
                    "best_similarity": best,
                }
            )
        )
    lookups = [_embedding_lookup(t) for _, t in sorted(embeddings.items())]
    first = next(iter(embeddings.values()))
    test_images = first.loc[first["split"] == "test", "image"]
    gallery = combine_fold_embeddings([e(train["image"], "train") for e in lookups])
    queries = combine_fold_embeddings([e(test_images, "test") for e in lookups])
    ranked, best = predict(queries, gallery, train["id"], threshold, k)
    test_rows = pd.DataFrame(
        {"image": test_images.to_numpy(), "predicted": [" ".join(r) for r in ranked], "best_similarity": best}
    )
    return pd.concat(val_rows, ignore_index=True), test_rows


def _embedding_lookup(table: pd.DataFrame):
    vectors = np.stack(table["embedding"].to_numpy()).astype(np.float32)
    position = {(img, split): i for i, (img, split) in enumerate(zip(table["image"], table["split"]))}

    def lookup(images, split: str) -> np.ndarray:
        return vectors[[position[(img, split)] for img in images]]

    return lookup
