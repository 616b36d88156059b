"""The local member's tables from its scored pairs: each (query, gallery identity)'s evidence
(`identity_evidence`), the member's long top-k table of a split (`identity_table`: identities
ranked by their calibrated evidence) and the review page's correspondences (`correspondences`:
per test query and identity, the best pair's inlier points).

An identity's evidence (`match.local.score`):
- `lnbnn`: the verified inliers of all its shortlisted photos, each weighed by its LNBNN weight
  (how much closer the correspondence is than the query descriptor's normaliser over the whole
  catalogue), each query feature counted once with its best weight (HotSpotter's `nsum`, scored
  after spatial verification as HotSpotter scores names). Inliers on what every photo shows
  (water, sky, a generic edge, a character's common stroke) weigh ~0, so a wrong identity no
  longer wins on background matches: known-identity rank-1 rose on every set we measured
  (bench/results/local.md, "Verified inliers weighed by LNBNN").
- `inliers`: its best photo's inlier count (the score before; also what LightGlue methods use,
  whose matches carry no SIFT distance to weigh)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth

EVIDENCE_KEYS = ["split", "query", "gallery_id"]
SCORES = ("lnbnn", "inliers")


def lnbnn_nsum(pairs: pd.DataFrame) -> np.ndarray:
    """Per row of pairs.groupby(EVIDENCE_KEYS, sort=False) (group order): the sum over query
    features of each feature's best LNBNN weight among the group's inliers."""
    groups = pairs.groupby(EVIDENCE_KEYS, sort=False).ngroup().to_numpy()
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    counts = pairs["evidence_features"].map(len).to_numpy() if len(pairs) else np.zeros(0, int)
    evidence = np.zeros(n_groups, np.float64)
    if counts.sum() == 0:
        return evidence
    inliers = pd.DataFrame(
        {
            "group": np.repeat(groups, counts),
            "feature": np.concatenate(pairs["evidence_features"].to_list()),
            "weight": np.concatenate(pairs["evidence_weights"].to_list()).astype(np.float64),
        }
    )
    best = inliers.groupby(["group", "feature"], sort=False)["weight"].max()
    summed = best.groupby(level="group").sum()
    evidence[summed.index.to_numpy()] = summed.to_numpy()
    return evidence


def identity_evidence(pairs: pd.DataFrame, score: str = "lnbnn") -> pd.DataFrame:
    """One row per (split, query, gallery identity) in pairs' order: fold, inliers (its best
    photo's), lnbnn (the catalogue vote, 0 without), identity_rank (its best place in the
    shortlists) and `evidence` (see the module docstring; `lnbnn` falls back to the inliers where
    the pairs carry no weights, as LightGlue's do)."""
    if score not in SCORES:
        raise InputError(f"match.local.score: unknown {score!r} ({' | '.join(SCORES)})")
    if "lnbnn" not in pairs:
        pairs = pairs.assign(lnbnn=np.float32(0.0))
    table = (
        pairs.groupby(EVIDENCE_KEYS, sort=False)
        .agg(
            fold=("fold", "first"),
            inliers=("inliers", "max"),
            lnbnn=("lnbnn", "max"),
            identity_rank=("identity_rank", "min"),
        )
        .reset_index()
    )
    weighted = score == "lnbnn" and "evidence_features" in pairs and pairs["evidence_features"].map(len).sum() > 0
    table["evidence"] = lnbnn_nsum(pairs) if weighted else table["inliers"].astype(np.float64)
    return table


def correspondences(
    pairs: pd.DataFrame, identities: pd.DataFrame, method: str, split: str = "test", frame: str = "crop"
) -> pd.DataFrame:
    """The review page's table: per query of `split` and gallery identity, the shortlisted image
    with the most inliers (ties: the global similarity), its inlier points (fractions of the
    width and height of the crop or, frame "photo", of the photo) and the identity's calibrated
    probability (`identities`: identity_evidence's rows with `probability`)."""
    columns = ["query", "gallery", "gallery_id", "method", "inliers", "probability", "query_xy", "gallery_xy", "frame"]
    part = pairs[pairs["split"] == split]
    if part.empty:
        return pd.DataFrame(columns=columns)
    order = ["query", "gallery_id", "inliers", "global_similarity"]
    best = part.sort_values(order, ascending=[True, True, False, False])
    best = best.drop_duplicates(["query", "gallery_id"]).assign(method=method, frame=frame)
    probability = identities[identities["split"] == split].set_index(["query", "gallery_id"])["probability"]
    best["probability"] = probability.reindex(pd.MultiIndex.from_frame(best[["query", "gallery_id"]])).to_numpy()
    best["inliers"] = best["inliers"].astype(np.int32)
    best["probability"] = best["probability"].astype(np.float32)
    return best[columns].reset_index(drop=True)


def identity_table(identities: pd.DataFrame, split: str, train: pd.DataFrame) -> pd.DataFrame:
    """The local member's long top-k table of one split: each shortlisted identity scored by its
    calibrated evidence (`identities`: identity_evidence's rows with `probability`), ranked by it
    (ties: the evidence itself, its LNBNN vote, then the global ranking), with fold and truth on
    validation."""
    part = identities[identities["split"] == split]
    columns = ["image", "rank", "id", "similarity", *(("fold", "truth") if split == "val" else ())]
    if part.empty:
        return pd.DataFrame(columns=columns)
    best = part.rename(columns={"probability": "similarity"}).copy()
    order = pd.Series(np.arange(best["query"].nunique()), index=best["query"].drop_duplicates().to_numpy())
    best["order"] = order.loc[best["query"]].to_numpy()
    best = best.sort_values(
        ["order", "similarity", "evidence", "lnbnn", "identity_rank"],
        ascending=[True, False, False, False, True],
        kind="stable",
    )
    best["rank"] = best.groupby("query").cumcount()
    table = best.rename(columns={"query": "image", "gallery_id": "id"})
    table["similarity"] = table["similarity"].astype(np.float32)
    if split != "val":
        return table[["image", "rank", "id", "similarity"]].reset_index(drop=True)
    truth = pd.concat([validation_truth(train, f) for f in sorted(table["fold"].unique())])
    table["truth"] = truth.loc[table["image"]].to_numpy()
    table["fold"] = table["fold"].astype(np.int64)
    return table[["image", "rank", "id", "similarity", "fold", "truth"]].reset_index(drop=True)
