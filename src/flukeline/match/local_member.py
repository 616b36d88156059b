"""The `local` ensemble member (`match.local.method`): each query's shortlist of the global
ensemble's top-B gallery images re-scored by a local matcher on the aligned crops, the pair
scores calibrated to probabilities on the validation pairs, and written like any member
(results/match/round<r>/local_<method>/), so that the ensemble fuses it with its fitted weight.

- Shortlist (match/local_shortlist.py): the global members' weighted-mean identity ranking (their
  weights fitted on validation exactly as the ensemble fits them), and among the gallery images
  of its top `candidates` identities the B with the highest weighted-mean image cosine
  (B = `match.local.shortlist`).
- Pairs (match/pair_scoring.py): the method's matcher, then the inliers of a MAGSAC homography,
  streamed query by query and checkpointed beside the outputs, so a killed job resumes.
- Calibration (match/pair_calibration.py): isotonic P(same individual | inliers) on the validation
  pairs, applied to every pair; an identity scores its best image's probability
  (match/local_tables.py). An identity outside the shortlist was not matched: it counts with the
  probability of zero inliers (summary.json `outside_similarity`, which the ensemble reads).

Outputs as a member's ({val,test}_topk, {val,test}_predictions, calibration.{csv,png},
summary.json), plus pairs.parquet (one row per matched pair), correspondences.parquet (per test
query and identity, the best pair's inlier points, which the review page draws) and
local_calibration.png."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_json_atomic, write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.ensemble import fitted_members
from flukeline.match.local_features import LocalFeatures, load_features
from flukeline.match.local_shortlist import (
    MemberViews,
    catalogue_index,
    global_ranking,
    shortlist_pairs,
    with_lnbnn_pairs,
)
from flukeline.match.local_tables import correspondences, identity_table
from flukeline.match.new_whale_threshold import (
    decide_threshold,
    new_whale_top1_share,
    prediction_scores,
    ranked_predictions,
    write_calibration,
)
from flukeline.match.pair_calibration import PairCalibration, fit_pair_calibration, plot_pair_calibration
from flukeline.match.pair_scoring import score_pairs
from flukeline.match.settings import LocalMatchSettings

log = logging.getLogger(__name__)


def member_views(
    members, folds, embedding_paths, train: pd.DataFrame, test_images, flip: bool
) -> dict[str, MemberViews]:
    """Each global member's embeddings (its tables: embedding_paths, member by member, fold by fold)."""
    views = {}
    for i, name in enumerate(members):
        tables = {f: pd.read_parquet(p) for f, p in zip(folds, embedding_paths[i * len(folds) : (i + 1) * len(folds)])}
        views[name] = MemberViews(tables, train["image"], test_images, flip)
    return views


def calibrated_pairs(
    pairs: pd.DataFrame, train: pd.DataFrame, plot_path: Path, title: str
) -> tuple[pd.DataFrame, PairCalibration]:
    """The pairs with `same` (validation pairs only: the test identities are never read here) and
    `probability` (isotonic in the inliers, fitted on the validation pairs, drawn at plot_path)."""
    val = pairs["split"] == "val"
    query_ids = train.set_index("image")["id"]
    same = (pairs.loc[val, "gallery_id"].to_numpy() == query_ids.loc[pairs.loc[val, "query"]].to_numpy()) & (
        pairs.loc[val, "gallery_id"].to_numpy() != NEW_WHALE
    )
    calibration = fit_pair_calibration(pairs.loc[val, "inliers"], same)
    pairs["same"] = pd.Series(pd.NA, index=pairs.index, dtype="boolean")
    pairs.loc[val, "same"] = same
    pairs["probability"] = calibration(pairs["inliers"]).astype(np.float32)
    plot_pair_calibration(calibration, pairs.loc[val, "inliers"], same, plot_path, title)
    return pairs, calibration


def scoring_cost(
    pairs: pd.DataFrame, seconds: float, scored_now: int, threads: int, features: dict[str, LocalFeatures]
) -> dict:
    """summary.json `cost`: pairs per query, the seconds per pair this run scored, features' times."""
    per_query = pairs.groupby(["split", "query"]).size()
    return {
        "pairs": len(pairs),
        "queries": int(len(per_query)),
        "pairs_per_query_mean": float(per_query.mean()) if len(per_query) else 0.0,
        "pairs_per_query_max": int(per_query.max()) if len(per_query) else 0,
        "seconds": round(seconds, 3),
        # Over the pairs this run scored (a resumed run took the others from its checkpoint).
        "pairs_scored_now": scored_now,
        "seconds_per_pair": seconds / max(1, scored_now),
        "threads": int(threads),
        # NaN (a cache written without timing) is no JSON: None.
        "seconds_per_image_features": {
            s: (f.seconds_per_image if np.isfinite(f.seconds_per_image) else None) for s, f in features.items()
        },
    }


def log_member(out: Path, cost: dict, threads: int, seconds: float, calibration, summary: dict) -> None:
    log.info(
        "local member %s: %d pairs over %d queries (%.1f per query, at most %d), %.4f s per pair (%d threads, "
        "%.0f s); features %s s per image; calibrated on %d same / %d other validation pairs; "
        "threshold %.3f, CV MAP@5 %.4f",
        out.name,
        cost["pairs"],
        cost["queries"],
        cost["pairs_per_query_mean"],
        cost["pairs_per_query_max"],
        cost["seconds_per_pair"],
        threads,
        seconds,
        {s: (round(v, 4) if v is not None else None) for s, v in cost["seconds_per_image_features"].items()},
        calibration.positives,
        calibration.negatives,
        summary["threshold"],
        summary["cv"]["map5"],
    )


def run_local_member(
    train_path,
    features_train,
    features_test,
    member_dirs,
    member_weights,
    embedding_paths,
    folds,
    params,
    out_dir,
    threads=1,
) -> None:
    """results/match/round<r>/local_<method>/ (see the module docstring). member_dirs: the global
    members' match folders; embedding_paths: their embeddings, member by member, fold by fold.
    params: LocalMatchSettings' keys (the local_match rule's JSON)."""
    settings = LocalMatchSettings.of(params)
    if len(member_dirs) != len(member_weights):
        raise InputError(f"{len(member_dirs)} member folders but {len(member_weights)} weights")
    if len(embedding_paths) != len(member_dirs) * len(folds):
        raise InputError(f"{len(embedding_paths)} embedding tables for {len(member_dirs)} members x {len(folds)} folds")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(train_path)
    features = {"train": load_features(features_train), "test": load_features(features_test)}
    # Named as the ensemble names them (results/match/round<r>/<member> is "<member>@round<r>").
    members = {
        f"{Path(d).name}@{Path(d).parent.name}": (Path(d), float(w)) for d, w in zip(member_dirs, member_weights)
    }
    # The global ensemble's weights, fitted as the ensemble rule fits them (without this member).
    members, _ = fitted_members(members, settings)
    weights = {n: w for n, (_, w) in members.items()}
    ranking = {split: global_ranking(members, settings.candidates, split) for split in ("val", "test")}
    test_images = ranking["test"]["image"].drop_duplicates().to_numpy()
    views = member_views(members, folds, embedding_paths, train, test_images, bool(settings.flip_fusion))

    pairs = shortlist_pairs(train, test_images, ranking, views, weights, int(settings.local.shortlist))
    # LNBNN on photo chips only (`frames`): on the demo's aligned crops it lowered known-identity
    # rank-1 (bench/results/local.md).
    if int(settings.local.lnbnn_identities) > 0 and features["train"].frames is not None:
        index = catalogue_index(train, features["train"], settings.local, threads)
        pairs = with_lnbnn_pairs(pairs, ranking, features, index, settings.local)
    else:
        pairs = pairs.assign(lnbnn=np.float32(0.0))
    method = features["train"].method
    partial = out / ".pairs.partial.parquet"
    pairs, seconds = score_pairs(pairs, features, settings.local, threads, method=method, checkpoint=partial)
    scored_now = int(pairs.attrs.get("scored_now", len(pairs)))
    title = f"{method} ({features['train'].size})"
    pairs, calibration = calibrated_pairs(pairs, train, out / "local_calibration.png", title)

    val_topk, test_topk = identity_table(pairs, "val", train), identity_table(pairs, "test", train)
    # The member's own new_whale threshold is on probabilities: a fixed cosine setting means nothing here.
    threshold, curve = decide_threshold(val_topk, settings.replace(new_whale_threshold="calibrate"))
    k = int(settings.top_k)
    val_predictions = ranked_predictions(val_topk, threshold, k)
    test_predictions = ranked_predictions(test_topk, threshold, k)
    frame = "crop" if features["train"].frames is None else "photo"
    write_parquet_atomic(correspondences(pairs, method, frame=frame), out / "correspondences.parquet")
    write_parquet_atomic(pairs.drop(columns=["query_xy", "gallery_xy"]), out / "pairs.parquet")
    write_parquet_atomic(val_topk, out / "val_topk.parquet")
    write_parquet_atomic(test_topk, out / "test_topk.parquet")
    write_parquet_atomic(val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(test_predictions, out / "test_predictions.parquet")
    write_calibration(curve, threshold, out, title=out.name)

    cost = scoring_cost(pairs, seconds, scored_now, threads, features)
    summary = {
        "threshold": threshold,
        "cv": prediction_scores(val_predictions),
        "test_new_whale_top1": new_whale_top1_share(test_predictions),
        "method": method,
        "size": features["train"].size,
        "shortlist": int(settings.local.shortlist),
        "global_weights": weights,
        # What the ensemble gives an identity this member did not match (outside the shortlist).
        "outside_similarity": float(calibration(np.array([0.0]))[0]),
        "pair_calibration": calibration.to_dict(),
        "cost": cost,
    }
    write_json_atomic(summary, out / "summary.json")
    partial.unlink(missing_ok=True)
    log_member(out, cost, threads, seconds, calibration, summary)
