"""The `local` ensemble member (`match.local.method`): each query's shortlist of gallery photos
re-scored by a local matcher, each identity's evidence calibrated to a probability on the
validation folds, and written like any member (results/match/round<r>/local_<method>/), so that
the ensemble fuses it with its fitted weight.

- Shortlist (match/local_shortlist.py): the global members' weighted-mean identity ranking (their
  weights fitted on validation exactly as the ensemble fits them), and among the gallery images
  of its top `candidates` identities the B with the highest weighted-mean image cosine
  (B = `match.local.shortlist`); with photo features, joined by the LNBNN ranking's best
  identities over every catalogue descriptor (match/local_index.py). With the photos' date,
  place and side (train / test tables) and match.scope rules that apply, only pairs that pass
  them, as the ensemble scopes its candidates (summary.json `scope`).
- Pairs (match/pair_scoring.py): the method's matcher, then the inliers of a MAGSAC homography,
  streamed query by query and checkpointed beside the outputs, so a killed job resumes. Each
  inlier carries its LNBNN weight (SIFT: the query descriptor's normaliser over the catalogue).
- Evidence (match/local_tables.py, `match.local.score`): per query and identity its inliers'
  LNBNN weights summed over query features (HotSpotter's nsum), or its best photo's inliers.
- Calibration (match/pair_calibration.py): isotonic P(same individual | evidence) on the
  validation rows, applied to every (query, identity). An identity outside the shortlist was not
  matched: it counts with the probability of no evidence (summary.json `outside_similarity`,
  which the ensemble reads).

Outputs as a member's ({val,test}_topk, {val,test}_predictions, calibration.{csv,png},
summary.json), plus pairs.parquet (one row per matched pair, with its identity's evidence and
probability), correspondences.parquet (per test query and identity,
the best pair's inlier points, which the review page draws) and local_calibration.png."""

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
from flukeline.match.local_reuse import catalogue_key, kept_index, vote_cache
from flukeline.match.local_shortlist import (
    MemberViews,
    PairScope,
    catalogue_index,
    catalogue_votes,
    global_ranking,
    known_photos,
    shortlist_pairs,
    with_lnbnn_pairs,
)
from flukeline.match.local_tables import EVIDENCE_KEYS, correspondences, identity_evidence, identity_table
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

# The calibration plot's x axis per match.local.score.
EVIDENCE_LABELS = {"lnbnn": "LNBNN-weighted inliers (nsum)", "inliers": "RANSAC inliers (best photo)"}


def member_views(
    members, folds, embedding_paths, train: pd.DataFrame, test_images, flip: bool
) -> dict[str, MemberViews]:
    """Each global member's embeddings (its tables: embedding_paths, member by member, fold by fold)."""
    views = {}
    for i, name in enumerate(members):
        tables = {f: pd.read_parquet(p) for f, p in zip(folds, embedding_paths[i * len(folds) : (i + 1) * len(folds)])}
        views[name] = MemberViews(tables, train["image"], test_images, flip)
    return views


def calibrated_identities(
    identities: pd.DataFrame, train: pd.DataFrame, plot_path: Path, title: str, score: str
) -> tuple[pd.DataFrame, PairCalibration]:
    """identity_evidence's rows with `same` (validation rows only: the test identities are never
    read here) and `probability` (isotonic in the evidence, fitted on the validation rows, drawn
    at plot_path)."""
    val = (identities["split"] == "val").to_numpy()
    query_ids = train.set_index("image")["id"]
    gallery = identities.loc[val, "gallery_id"].to_numpy()
    same = (gallery == query_ids.loc[identities.loc[val, "query"]].to_numpy()) & (gallery != NEW_WHALE)
    calibration = fit_pair_calibration(identities.loc[val, "evidence"], same)
    identities["same"] = pd.Series(pd.NA, index=identities.index, dtype="boolean")
    identities.loc[val, "same"] = same
    identities["probability"] = calibration(identities["evidence"]).astype(np.float32)
    label = EVIDENCE_LABELS.get(score, score)
    plot_pair_calibration(calibration, identities.loc[val, "evidence"], same, plot_path, title, label)
    return identities, calibration


def pairs_table(pairs: pd.DataFrame, identities: pd.DataFrame) -> pd.DataFrame:
    """pairs.parquet: each scored pair with its weighted inliers (the sum of its inliers' LNBNN
    weights), and its identity's evidence, `same` (validation) and calibrated probability."""
    arrays = ["query_xy", "gallery_xy", "evidence_features", "evidence_weights"]
    table = pairs.drop(columns=arrays)
    table["weighted_inliers"] = pairs["evidence_weights"].map(np.sum).astype(np.float32)
    own = identities[EVIDENCE_KEYS + ["evidence", "same", "probability"]]
    return table.merge(own, on=EVIDENCE_KEYS, how="left", validate="many_to_one")


def query_features(features: dict[str, LocalFeatures], settings: LocalMatchSettings) -> dict[str, LocalFeatures]:
    """The tables the queries' features are read from: the features themselves, or with
    `match.local.mirrors` (SIFT) each followed by its mirrored descriptors (with_mirrors)."""
    if not settings.local.mirrors:
        return features
    if features["train"].method != "sift":
        log.warning(
            "match.local.mirrors: %s features cannot be mirrored: matched as they are", features["train"].method
        )
        return features
    return {split: table.with_mirrors() for split, table in features.items()}


def catalogue_normalisers(
    train,
    features,
    ranking,
    settings: LocalMatchSettings,
    threads: int,
    pairs,
    queries=None,
    index_of=catalogue_index,
    scope: PairScope | None = None,
    cache_dir=None,
):
    """The pairs with `lnbnn` (and the LNBNN pairs, photo features only: on the demo's aligned
    crops they lowered known-identity rank-1, bench/results/local.md) and each query's LNBNN
    normalisers, which weigh its inliers (score lnbnn), or the pairs with lnbnn 0 and None where
    neither is asked for or the method is no SIFT (its descriptors are no RootSIFT). queries: the
    tables the queries' features are read from (query_features; default the features). index_of:
    how the catalogue index is had (catalogue_index's signature; a gallery keeps it built). scope:
    the LNBNN pairs only with compatible photos (match/local_shortlist.py). cache_dir: the votes of
    earlier runs over the same catalogue are read from there (match/local_reuse.py), None for none."""
    local = settings.local
    weigh = local.score == "lnbnn"
    add_pairs = int(local.lnbnn_identities) > 0 and features["train"].frames is not None
    if features["train"].method != "sift" or not (weigh or add_pairs):
        return pairs.assign(lnbnn=np.float32(0.0)), None
    cache = None
    if cache_dir is not None:
        catalogue = catalogue_key(known_photos(train, features["train"]), features["train"], local)
        cache = vote_cache(cache_dir, catalogue)
    if cache is not None and index_of is catalogue_index:  # (a gallery keeps its own index)

        def build():
            return index_of(train, features["train"], local, threads)

        index = kept_index(Path(cache_dir) / "index", catalogue, build, threads)
    else:
        index = index_of(train, features["train"], local, threads)
    votes = catalogue_votes(ranking, queries or features, index, cache)
    identities = int(local.lnbnn_identities) if add_pairs else 0
    pairs = with_lnbnn_pairs(pairs, ranking, votes, index, identities, int(local.photos_per_identity), scope)
    return pairs, ({key: v.normalisers for key, v in votes.items()} if weigh else None)


def scoring_cost(
    pairs: pd.DataFrame, seconds: float, scored_now: int, threads: int, features: dict[str, LocalFeatures]
) -> dict:
    """summary.json `cost`: pairs per query, the seconds per pair this run scored (None where every
    pair came from a checkpoint or the cache), features' times."""
    per_query = pairs.groupby(["split", "query"]).size()
    return {
        "pairs": len(pairs),
        "queries": int(len(per_query)),
        "pairs_per_query_mean": float(per_query.mean()) if len(per_query) else 0.0,
        "pairs_per_query_max": int(per_query.max()) if len(per_query) else 0,
        "seconds": round(seconds, 3),
        # Over the pairs this run scored (a resumed run took the others from its checkpoint).
        "pairs_scored_now": scored_now,
        "pairs_from_cache": int(pairs.attrs.get("from_cache", 0)),
        "seconds_per_pair": seconds / scored_now if scored_now else None,
        "threads": int(threads),
        # NaN (a cache written without timing) is no JSON: None.
        "seconds_per_image_features": {
            s: (f.seconds_per_image if np.isfinite(f.seconds_per_image) else None) for s, f in features.items()
        },
    }


def log_member(out: Path, cost: dict, threads: int, seconds: float, calibration, summary: dict) -> None:
    log.info(
        "local member %s: %d pairs over %d queries (%.1f per query, at most %d; %d matched now, %d from the"
        " cache), %s s per pair (%d threads, %.0f s); features %s s per image; calibrated on %d same / %d other"
        " validation pairs; threshold %.3f, CV MAP@5 %.4f",
        out.name,
        cost["pairs"],
        cost["queries"],
        cost["pairs_per_query_mean"],
        cost["pairs_per_query_max"],
        cost["pairs_scored_now"],
        cost["pairs_from_cache"],
        "-" if cost["seconds_per_pair"] is None else f"{cost['seconds_per_pair']:.4f}",
        threads,
        seconds,
        {s: (round(v, 4) if v is not None else None) for s, v in cost["seconds_per_image_features"].items()},
        calibration.positives,
        calibration.negatives,
        summary["threshold"],
        summary["cv"]["map5"],
    )


def pair_scope(settings: LocalMatchSettings, train: pd.DataFrame, test_path, viewpoints_path=None) -> PairScope | None:
    """match.scope for the pairs (None without the test table, or when no rule applies: the
    pairs are then exactly as without scope); viewpoints_path: the viewpoint estimate's table."""
    from flukeline.match.scope import build_scope
    from flukeline.match.viewpoint_estimate import with_estimated_viewpoints

    if test_path is None:
        return None
    scope = build_scope(settings.scope, *with_estimated_viewpoints(train, pd.read_parquet(test_path), viewpoints_path))
    return PairScope(scope) if scope is not None else None


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
    test_path=None,
    viewpoints_path=None,
    cache_dir=None,
) -> None:
    """results/match/round<r>/local_<method>/ (see the module docstring). member_dirs: the global
    members' match folders; embedding_paths: their embeddings, member by member, fold by fold.
    params: LocalMatchSettings' keys (the local_match rule's JSON). test_path: test.parquet, whose
    date, place and side match.scope reads (with train.parquet's); viewpoints_path: the viewpoint
    estimate's table (match.scope.estimate). cache_dir: the votes and pair scores of earlier runs
    (match/local_reuse.py: reused only where exactly the same), None for none."""
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
    scope = pair_scope(settings, train, test_path, viewpoints_path)
    ranking = {split: global_ranking(members, settings.candidates, split, scope) for split in ("val", "test")}
    test_images = ranking["test"]["image"].drop_duplicates().to_numpy()
    views = member_views(members, folds, embedding_paths, train, test_images, bool(settings.flip_fusion))

    pairs = shortlist_pairs(train, test_images, ranking, views, weights, int(settings.local.shortlist), scope)
    queries = query_features(features, settings)
    pairs, normalisers = catalogue_normalisers(
        train, features, ranking, settings, threads, pairs, queries, scope=scope, cache_dir=cache_dir
    )
    method = features["train"].method
    partial = out / ".pairs.partial.parquet"
    pairs, seconds = score_pairs(
        pairs,
        features,
        settings.local,
        threads,
        method=method,
        checkpoint=partial,
        normalisers=normalisers,
        queries=queries,
        cache_dir=cache_dir,
    )
    scored_now = int(pairs.attrs.get("scored_now", len(pairs)))
    title = f"{method} ({features['train'].size})"
    # Without normalisers (no SIFT, or score inliers) there are no weights to sum.
    score = settings.local.score if normalisers is not None else "inliers"
    identities = identity_evidence(pairs, score)
    identities, calibration = calibrated_identities(identities, train, out / "local_calibration.png", title, score)

    val_topk, test_topk = identity_table(identities, "val", train), identity_table(identities, "test", train)
    # The member's own new_whale threshold is on probabilities: a fixed cosine setting means nothing here.
    threshold, curve = decide_threshold(val_topk, settings.replace(new_whale_threshold="calibrate"))
    k = int(settings.top_k)
    val_predictions = ranked_predictions(val_topk, threshold, k, settings.new_whale_score)
    test_predictions = ranked_predictions(test_topk, threshold, k, settings.new_whale_score)
    frame = "crop" if features["train"].frames is None else "photo"
    write_parquet_atomic(correspondences(pairs, identities, method, frame=frame), out / "correspondences.parquet")
    write_parquet_atomic(pairs_table(pairs, identities), out / "pairs.parquet")
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
        "score": score,
        "evidence_calibration": calibration.to_dict(),
        "cost": cost,
        # The rules applied to the pairs and what they took out: candidate identities, and photos
        # left out of the embedding shortlists and of the LNBNN shortlists.
        "scope": scope.report() if scope is not None else {"rules": []},
    }
    write_json_atomic(summary, out / "summary.json")
    partial.unlink(missing_ok=True)
    log_member(out, cost, threads, seconds, calibration, summary)
