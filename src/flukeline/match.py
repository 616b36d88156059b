"""Match stage: identity templates (trimmed centres or single images), FAISS top-k search with
flip fusion, the calibrated new_whale threshold, the ensemble of members, and pseudo-labels.

Candidates travel between rules as long top-k tables (query, rank, id, similarity), never as
full similarity matrices, so the stage scales with the gallery."""

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


def map5_by_threshold(truth, candidate_ids: np.ndarray, candidate_sims: np.ndarray, thresholds, k: int = 5) -> np.ndarray:
    """MAP@k of `rank_with_new_whale` for every threshold at once, without building the lists.

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
        scores.append(np.where(rank < k, 1.0 / (rank + 1), 0.0).mean() if len(truth) else float("nan"))
    return np.asarray(scores)


def trimmed_centres(embeddings: np.ndarray, ids, min_images: int = 4, drop_share: float = 0.25, repeats: int = 2) -> tuple[np.ndarray, np.ndarray]:
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


def identity_topk(queries: np.ndarray, gallery: np.ndarray, gallery_ids, k: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best identities (ids, similarities, descending). Templates: trimmed
    centres, or every gallery image with an identity scored by its best image (`templates: images`)."""
    gallery_ids = np.asarray(gallery_ids)
    known = gallery_ids != NEW_WHALE
    index_options = {"ann_above": params.get("ann_above"), "hnsw_m": params.get("hnsw_m", 32), "ef_search": params.get("ef_search", 128)}
    if params.get("templates", "centres") == "centres":
        centre = params.get("centres", {})
        names, vectors = trimmed_centres(gallery[known], gallery_ids[known], int(centre.get("min_images", 4)), float(centre.get("drop_share", 0.25)))
        sims, idx = search(queries, vectors, k, **index_options)
        return _pad(names[np.maximum(idx, 0)], sims, idx < 0, k)
    names, vectors = gallery_ids[known], gallery[known]
    depth = min(len(vectors), k * int(params.get("images_per_identity_depth", 10)))
    sims, idx = search(queries, vectors, depth, **index_options)
    long = pd.DataFrame({"query": np.repeat(np.arange(len(queries)), sims.shape[1]), "id": names[np.maximum(idx, 0)].ravel(), "sim": sims.ravel(), "valid": (idx >= 0).ravel()})
    best = long[long["valid"]].drop_duplicates(["query", "id"]).groupby("query", sort=True).head(k)
    best = best.assign(rank=best.groupby("query").cumcount())
    ids = np.full((len(queries), k), "", dtype=object)
    out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids[best["query"], best["rank"]] = best["id"]
    out[best["query"], best["rank"]] = best["sim"]
    return _pad(ids, out, ids == "", k)


def _pad(ids, sims, missing, k):
    """Fewer identities than k: empty ids with similarity -inf fill the rest."""
    ids = np.where(missing, "", ids).astype(object)
    sims = np.where(missing, -np.inf, sims).astype(np.float32)
    if ids.shape[1] < k:
        extra = k - ids.shape[1]
        ids = np.concatenate([ids, np.full((len(ids), extra), "", dtype=object)], axis=1)
        sims = np.concatenate([sims, np.full((len(sims), extra), -np.inf, dtype=np.float32)], axis=1)
    return ids, sims


def to_long(images, ids: np.ndarray, sims: np.ndarray, **columns) -> pd.DataFrame:
    """Q x k candidate arrays -> long top-k table (image, rank, id, similarity[, extra columns])."""
    q, k = ids.shape
    table = pd.DataFrame({
        "image": np.repeat(np.asarray(images), k), "rank": np.tile(np.arange(k), q),
        "id": ids.ravel().astype(str), "similarity": sims.ravel().astype(np.float32),
    })
    for name, values in columns.items():
        table[name] = np.repeat(np.broadcast_to(np.asarray(values), (q,)), k)
    return table[table["id"] != ""].reset_index(drop=True)


def to_wide(table: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long top-k table -> (images, ids Q x k, similarities Q x k), in first-appearance order."""
    images = table["image"].drop_duplicates().to_numpy()
    row = pd.Series(np.arange(len(images)), index=images).loc[table["image"]].to_numpy()
    keep = table["rank"].to_numpy() < k
    ids = np.full((len(images), k), "", dtype=object)
    sims = np.full((len(images), k), -np.inf, dtype=np.float32)
    ids[row[keep], table["rank"].to_numpy()[keep]] = table["id"].to_numpy()[keep]
    sims[row[keep], table["rank"].to_numpy()[keep]] = table["similarity"].to_numpy()[keep]
    return images, ids, sims


def member_topk(train: pd.DataFrame, embeddings: dict[int, pd.DataFrame], params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation candidates of every fold (fold model, gallery = the other folds) and test
    candidates (all fold models fused, gallery = every training image)."""
    depth = int(params.get("candidates", 20))
    flip = bool(params.get("flip_fusion", True))
    lookups = {fold: _embedding_lookup(table, flip) for fold, table in sorted(embeddings.items())}
    val_tables = []
    for fold, lookup in lookups.items():
        in_fold = train["fold"].to_numpy() == fold
        queries, gallery = train[in_fold], train[~in_fold]
        ids, sims = identity_topk(lookup(queries["image"], "train"), lookup(gallery["image"], "train"), gallery["id"], depth, params)
        truth = validation_truth(train, fold).loc[queries["image"]].to_numpy()
        val_tables.append(to_long(queries["image"], ids, sims, fold=fold, truth=truth))
    first = next(iter(embeddings.values()))
    test_images = first.loc[first["split"] == "test", "image"]
    gallery = fuse_views(*[lookup(train["image"], "train") for lookup in lookups.values()])
    queries = fuse_views(*[lookup(test_images, "test") for lookup in lookups.values()])
    ids, sims = identity_topk(queries, gallery, train["id"], depth, params)
    return pd.concat(val_tables, ignore_index=True), to_long(test_images, ids, sims)


def _embedding_lookup(table: pd.DataFrame, flip: bool):
    plain = np.stack(table["embedding"].to_numpy()).astype(np.float32)
    if flip and "embedding_flip" in table:
        # Flip fusion: query->gallery and mirrored query->mirrored gallery, averaged.
        plain = fuse_views(plain, np.stack(table["embedding_flip"].to_numpy()).astype(np.float32))
    position = pd.Series(np.arange(len(table)), index=pd.MultiIndex.from_arrays([table["image"], table["split"]]))

    def lookup(images, split: str) -> np.ndarray:
        return plain[position.loc[[(img, split) for img in images]].to_numpy()]

    return lookup


# --- new_whale threshold ----------------------------------------------------------------------


def calibrate_threshold(val_topk: pd.DataFrame, grid, k: int = 5) -> tuple[float, pd.DataFrame]:
    """The threshold maximising validation MAP@k (ties: the lowest), and the whole curve with
    each threshold's share of validation images whose top-1 is new_whale."""
    truth = val_topk.drop_duplicates("image").set_index("image")["truth"]
    images, ids, sims = to_wide(val_topk, k)
    grid = np.asarray(grid, dtype=np.float64)
    scores = map5_by_threshold(truth.loc[images].to_numpy(), ids, sims, grid, k)
    new_top1 = [(sims[:, 0] < t).mean() for t in grid]
    curve = pd.DataFrame({"threshold": grid, "map5": scores, "new_whale_top1": new_top1})
    return float(grid[int(np.nanargmax(scores))]), curve


def ranked_predictions(topk: pd.DataFrame, threshold: float, k: int = 5) -> pd.DataFrame:
    """Kaggle lists: candidates with new_whale inserted at the threshold (image, predicted, best)."""
    images, ids, sims = to_wide(topk, k)
    ranked = rank_with_new_whale([[i for i in row if i] for row in ids], [row[np.isfinite(row)] for row in sims], threshold, k)
    out = pd.DataFrame({"image": images, "predicted": [" ".join(r) for r in ranked], "best_similarity": sims[:, 0]})
    extra = [c for c in ("fold", "truth") if c in topk]
    if extra:
        out = out.merge(topk.drop_duplicates("image")[["image", *extra]], on="image", how="left")
    return out


# --- ensemble ----------------------------------------------------------------------------------


def ensemble_topk(members: dict[str, tuple[pd.DataFrame, float]], depth: int) -> pd.DataFrame:
    """Weighted mean of member similarities (3rd place) over the union of their candidates; an
    identity missing from a member's list counts with that member's lowest listed similarity for
    the query (an upper bound on what it would have scored)."""
    weights = {name: float(w) for name, (_, w) in members.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("ensemble weights sum to zero")
    key = ["image", "id"]
    frames = []
    for name, (table, _) in members.items():
        floor = table.groupby("image")["similarity"].min().rename(f"floor_{name}")
        frames.append((name, table.set_index(key)["similarity"].rename(name), floor))
    union = pd.concat([t[key] for t, _ in members.values()]).drop_duplicates().reset_index(drop=True)
    score = np.zeros(len(union))
    for name, sims, floor in frames:
        value = union.join(sims, on=key)[name].to_numpy()
        fallback = floor.loc[union["image"]].to_numpy()
        score += weights[name] * np.where(np.isnan(value), fallback, value)
    union["similarity"] = (score / total).astype(np.float32)
    # Queries keep their first-appearance order; within one, similarity descending, ties by id.
    union["order"] = pd.Series(np.arange(union["image"].nunique()), index=union["image"].drop_duplicates()).loc[union["image"]].to_numpy()
    ordered = union.sort_values(["order", "similarity", "id"], ascending=[True, False, True], kind="stable")
    ordered = ordered.groupby("image", sort=False).head(depth)
    ordered["rank"] = ordered.groupby("image").cumcount()
    extra = [c for c in ("fold", "truth") if c in next(iter(members.values()))[0]]
    if extra:
        first = pd.concat([t.drop_duplicates("image")[["image", *extra]] for t, _ in members.values()]).drop_duplicates("image")
        ordered = ordered.merge(first, on="image", how="left")
    return ordered[["image", "rank", "id", "similarity", *extra]].reset_index(drop=True)


def vote_predictions(members: dict[str, tuple[pd.DataFrame, float]], k: int = 5) -> pd.DataFrame:
    """Weighted Borda voting over the members' final top-k lists (2nd place): rank r earns
    weight x (k - r); new_whale, already placed by each member's own threshold, is a candidate
    like any other. members: name -> (predictions with image/predicted, weight)."""
    rows = []
    for name, (predictions, weight) in members.items():
        for rank in range(k):
            rows.append(pd.DataFrame({
                "image": predictions["image"].to_numpy(),
                "id": [p.split()[rank] if len(p.split()) > rank else "" for p in predictions["predicted"]],
                "votes": float(weight) * (k - rank),
            }))
    votes = pd.concat(rows)
    votes = votes[votes["id"] != ""].groupby(["image", "id"], as_index=False)["votes"].sum()
    votes = votes.sort_values(["image", "votes", "id"], ascending=[True, False, True], kind="stable")
    lists = votes.groupby("image", sort=False)["id"].apply(lambda s: " ".join(s.head(k)))
    first = next(iter(members.values()))[0]
    out = first[[c for c in ("image", "fold", "truth") if c in first]].copy()
    out["predicted"] = lists.loc[out["image"]].to_numpy()
    return out


# --- pseudo-labels -----------------------------------------------------------------------------


def select_pseudo_labels(test_topk: pd.DataFrame, threshold: float, min_similarity: float, min_margin: float, round_: int) -> pd.DataFrame:
    """Test images whose best identity is confident enough to train the next round's members:
    top-1 similarity >= max(min_similarity, the new_whale threshold) and ahead of the runner-up
    by >= min_margin. The table says why each image was taken."""
    images, top_ids, top_sims, margin, eligible = _pseudo_label_candidates(test_topk, threshold, min_margin)
    floor = max(float(min_similarity), float(threshold))
    taken = eligible & (top_sims >= floor)
    return pd.DataFrame({
        "image": images[taken], "id": top_ids[taken].astype(str), "similarity": top_sims[taken], "margin": margin[taken],
        "round": int(round_),
        "reason": [f"top-1 similarity {s:.3f} >= {floor:.3f} and margin {m:.3f} >= {min_margin:.3f}" for s, m in zip(top_sims[taken], margin[taken])],
    })


def _pseudo_label_candidates(topk: pd.DataFrame, threshold: float, min_margin: float):
    """Per query: image, top-1 id and similarity, margin over the runner-up, and whether it could
    be a pseudo-label at all (an identity above the new_whale threshold, `min_margin` ahead). The
    selection and its calibration share this rule, so the cut is calibrated on the same kind of
    images it takes."""
    images, ids, sims = to_wide(topk, 2)
    second = np.where(np.isfinite(sims[:, 1]), sims[:, 1], -1.0)
    margin = sims[:, 0] - second
    eligible = (sims[:, 0] >= float(threshold)) & (margin >= float(min_margin)) & (ids[:, 0] != "")
    return images, ids[:, 0], sims[:, 0], margin, eligible


# A precision measured on fewer validation images than this is noise, not a calibration.
PSEUDO_LABEL_MIN_SUPPORT = 10


def calibrate_pseudo_label_similarity(val_topk: pd.DataFrame, threshold: float, min_precision: float,
                                      min_margin: float, min_support: int = PSEUDO_LABEL_MIN_SUPPORT) -> tuple[float, pd.DataFrame]:
    """The lowest top-1 similarity at which the validation folds' would-be pseudo-labels (top-1
    identity above the new_whale threshold, `min_margin` ahead of the runner-up) are right at least
    `min_precision` of the time, counted on at least `min_support` images; a new_whale image that
    would be taken counts as wrong. Returns (similarity, or inf when no cut qualifies, and the
    curve: similarity, taken, precision at every cut), so the rule can say why nothing was taken."""
    if "truth" not in val_topk:
        raise ValueError("pseudo-label calibration needs the validation truth ('truth' column of the top-k table)")
    images, top_ids, top_sims, _, eligible = _pseudo_label_candidates(val_topk, threshold, min_margin)
    truth = val_topk.drop_duplicates("image").set_index("image")["truth"].loc[images].to_numpy()
    top = top_sims[eligible]
    right = top_ids[eligible] == truth[eligible]
    order = np.argsort(-top, kind="stable")
    top, right = top[order], right[order]
    taken = np.arange(1, len(top) + 1)
    precision = np.cumsum(right) / np.maximum(taken, 1)
    # A cut can only fall between different similarities: ties are taken together.
    cut = np.r_[top[1:] != top[:-1], True] if len(top) else np.zeros(0, dtype=bool)
    curve = pd.DataFrame({"similarity": top[cut], "taken": taken[cut], "precision": precision[cut]})
    good = curve[(curve["taken"] >= int(min_support)) & (curve["precision"] >= float(min_precision))]
    return (float(good["similarity"].min()) if len(good) else float("inf")), curve
