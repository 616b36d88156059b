"""Match-stage rules: one member's candidates and calibrated predictions, and the ensemble of the
members of a pseudo-label round (with the pseudo-labels for the next round)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.io import write_csv_atomic, write_json_atomic, write_parquet_atomic
from flukeline.match.calibration import (
    decide_threshold,
    new_whale_top1_share,
    plot_calibration,
    prediction_scores,
    ranked_predictions,
    write_calibration,
)
from flukeline.match.pseudo_labels import (
    calibrated_pseudo_label_cut,
    select_pseudo_labels,
)


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

log = logging.getLogger(__name__)

def run_ensemble(member_dirs, member_weights, params, round_, out_dir, pseudo_labels_path) -> None:
    """results/match/round<r>/ensemble/: the members' weighted average (threshold calibrated on
    the validation folds) or weighted vote, and the pseudo-labels for round r + 1."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = int(params.get("top_k", 5))
    depth = int(params.get("candidates", 20))
    method = params.get("ensemble", {}).get("method", "average")
    members = {Path(d).name + f"@{Path(d).parent.name}": (Path(d), float(w)) for d, w in zip(member_dirs, member_weights)}
    if method == "average":
        val_topk = ensemble_topk({n: (pd.read_parquet(d / "val_topk.parquet"), w) for n, (d, w) in members.items()}, depth)
        test_topk = ensemble_topk({n: (pd.read_parquet(d / "test_topk.parquet"), w) for n, (d, w) in members.items()}, depth)
        threshold, curve = decide_threshold(val_topk, params)
        val_predictions = ranked_predictions(val_topk, threshold, k)
        test_predictions = ranked_predictions(test_topk, threshold, k)
        write_calibration(curve, threshold, out, title=f"ensemble, round {round_}")
    elif method == "vote":
        val_predictions = vote_predictions({n: (pd.read_parquet(d / "val_predictions.parquet"), w) for n, (d, w) in members.items()}, k)
        test_predictions = vote_predictions({n: (pd.read_parquet(d / "test_predictions.parquet"), w) for n, (d, w) in members.items()}, k)
        # Voting has no similarity: candidates for pseudo-labels come from the averaged lists.
        test_topk = ensemble_topk({n: (pd.read_parquet(d / "test_topk.parquet"), w) for n, (d, w) in members.items()}, depth)
        threshold = float(np.mean([pd.read_json(d / "summary.json", typ="series")["threshold"] for d, _ in members.values()]))
        write_csv_atomic(pd.DataFrame({"threshold": [threshold], "map5": [np.nan], "new_whale_top1": [np.nan]}), out / "calibration.csv")
        plot_calibration(pd.DataFrame({"threshold": [threshold], "map5": [0.0], "new_whale_top1": [0.0]}), threshold, out / "calibration.png", "vote: members' own thresholds")
    else:
        raise ValueError(f"match.ensemble.method: unknown {method!r} (average, vote)")
    write_parquet_atomic(val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(test_predictions, out / "test_predictions.parquet")
    pseudo = params.get("pseudo_labels", {})
    min_margin = float(pseudo.get("min_margin", 0.1))
    min_similarity, pseudo_calibration = pseudo.get("min_similarity", "auto"), None
    if min_similarity == "auto":
        if method != "average":
            val_topk = ensemble_topk({n: (pd.read_parquet(d / "val_topk.parquet"), w) for n, (d, w) in members.items()}, depth)
        min_similarity, pseudo_calibration = calibrated_pseudo_label_cut(val_topk, threshold, float(pseudo.get("min_precision", 0.9)), min_margin)
    labels = select_pseudo_labels(test_topk, threshold, float(min_similarity), min_margin, round_)
    write_parquet_atomic(labels, pseudo_labels_path)
    summary = {
        "method": method, "threshold": threshold, "members": {n: w for n, (_, w) in members.items()},
        "cv": prediction_scores(val_predictions), "test_new_whale_top1": new_whale_top1_share(test_predictions), "pseudo_labels": len(labels),
        "pseudo_label_min_similarity": float(min_similarity) if np.isfinite(float(min_similarity)) else None,
        "pseudo_label_calibration": pseudo_calibration,
    }
    write_json_atomic(summary, out / "summary.json")
    log.info("ensemble round %d (%s): threshold %.3f, CV MAP@5 %.4f, %d pseudo-labels", round_, method, threshold, summary["cv"]["map5"], len(labels))
