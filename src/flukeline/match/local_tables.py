"""The local member's tables from its scored, calibrated pairs: the member's long top-k table of a
split (`identity_table`: an identity scored by its best image's probability) and the review
page's correspondences (`correspondences`: per test query and identity, the best pair's inlier
points)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flukeline.core.folds import validation_truth


def correspondences(pairs: pd.DataFrame, method: str, split: str = "test", frame: str = "crop") -> pd.DataFrame:
    """The review page's table: per query of `split` and gallery identity, the shortlisted image
    with the most inliers (ties: the global similarity) and its inlier points (fractions of the
    width and height of the crop or, frame "photo", of the photo)."""
    columns = ["query", "gallery", "gallery_id", "method", "inliers", "probability", "query_xy", "gallery_xy", "frame"]
    part = pairs[pairs["split"] == split]
    if part.empty:
        return pd.DataFrame(columns=columns)
    order = ["query", "gallery_id", "inliers", "global_similarity"]
    best = part.sort_values(order, ascending=[True, True, False, False])
    best = best.drop_duplicates(["query", "gallery_id"]).assign(method=method, frame=frame)
    best["inliers"] = best["inliers"].astype(np.int32)
    best["probability"] = best["probability"].astype(np.float32)
    return best[columns].reset_index(drop=True)


def identity_table(pairs: pd.DataFrame, split: str, train: pd.DataFrame) -> pd.DataFrame:
    """The local member's long top-k table of one split: each shortlisted identity scored by its
    best image's probability, ranked by it (ties: its LNBNN score, then the global ranking), with
    fold and truth on validation. pairs without an `lnbnn` column tie-break on the global ranking."""
    if "lnbnn" not in pairs:
        pairs = pairs.assign(lnbnn=np.float32(0.0))
    part = pairs[pairs["split"] == split]
    columns = ["image", "rank", "id", "similarity", *(("fold", "truth") if split == "val" else ())]
    if part.empty:
        return pd.DataFrame(columns=columns)
    best = (
        part.groupby(["query", "gallery_id"], sort=False)
        .agg(
            similarity=("probability", "max"),
            lnbnn=("lnbnn", "max"),
            identity_rank=("identity_rank", "min"),
            fold=("fold", "first"),
        )
        .reset_index()
    )
    order = pd.Series(np.arange(part["query"].nunique()), index=part["query"].drop_duplicates().to_numpy())
    best["order"] = order.loc[best["query"]].to_numpy()
    # Ties of the calibrated probability (a step function of the inliers): the LNBNN score over the
    # whole catalogue, then the global ranking.
    best = best.sort_values(
        ["order", "similarity", "lnbnn", "identity_rank"], ascending=[True, False, False, True], kind="stable"
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
