"""The ensemble of a pseudo-label round's members (those of that round and the ones before): the
weighted mean of their similarities (`ensemble_topk`) or a weighted vote over their lists
(`vote_topk`), and the `ensemble` rule's runner, which writes the combined top-k tables, the
Kaggle lists, the threshold, the summary and the pseudo-labels for the next round."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.io import write_csv_atomic, write_json_atomic, write_parquet_atomic
from flukeline.core.retrieval import threshold_grid
from flukeline.match.ensemble_weights import fit_weights
from flukeline.match.new_share import VALIDATION, estimate_new_share, target_share
from flukeline.match.new_whale_threshold import (
    decide_threshold,
    new_whale_top1_share,
    plot_calibration,
    prediction_scores,
    ranked_predictions,
    write_calibration,
)
from flukeline.match.pseudo_labels import calibrated_pseudo_label_cut, select_pseudo_labels
from flukeline.match.settings import EnsembleSettings, LocalMatchSettings

log = logging.getLogger(__name__)


def query_order(queries: pd.Series, images: pd.Series) -> np.ndarray:
    """Each of `images`' position among `queries` (distinct images, in order): a sort key that
    keeps the queries in that order."""
    return pd.Series(np.arange(len(queries)), index=queries.to_numpy()).loc[images].to_numpy()


def ensemble_topk(
    members: dict[str, tuple[pd.DataFrame, float]], depth: int | None, fallbacks: dict[str, float] | None = None
) -> pd.DataFrame:
    """Weighted mean of member similarities (3rd place) over the union of their candidates; an
    identity missing from a member's list counts with that member's lowest listed similarity for
    the query (an upper bound on what it would have scored), or with the member's fixed
    `fallbacks` value (the local member: the probability of zero inliers for what it did not match)."""
    fallbacks = fallbacks or {}
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
        if name in fallbacks:
            fallback = np.full(len(union), float(fallbacks[name]))
        else:
            fallback = floor.loc[union["image"]].to_numpy()
        score += weights[name] * np.where(np.isnan(value), fallback, value)
    union["similarity"] = (score / total).astype(np.float32)
    # Queries keep their first-appearance order; within one, similarity descending, ties by id.
    union["order"] = query_order(union["image"].drop_duplicates(), union["image"])
    ordered = union.sort_values(["order", "similarity", "id"], ascending=[True, False, True], kind="stable")
    if depth is not None:
        ordered = ordered.groupby("image", sort=False).head(depth)
    ordered["rank"] = ordered.groupby("image").cumcount()
    extra = [c for c in ("fold", "truth") if c in next(iter(members.values()))[0]]
    if extra:
        first = pd.concat([t.drop_duplicates("image")[["image", *extra]] for t, _ in members.values()])
        ordered = ordered.merge(first.drop_duplicates("image"), on="image", how="left")
    return ordered[["image", "rank", "id", "similarity", *extra]].reset_index(drop=True)


def vote_topk(members: dict[str, tuple[pd.DataFrame, float]], k: int = 5, depth: int | None = None) -> pd.DataFrame:
    """Weighted Borda voting over the members' final top-k lists (2nd place): rank r earns
    weight x (k - r); new_whale, already placed by each member's own threshold, is a candidate
    like any other. A long top-k table (image, rank, id, similarity[, fold, truth]) of every
    voted id (the first `depth`), most votes first, ties by id; its similarity column holds the
    vote share: votes over the most an id can get (first place on every list, k x the total
    weight). members: name -> (predictions with image/predicted, weight)."""
    total = sum(float(w) for _, w in members.values())
    if total <= 0:
        raise ValueError("ensemble weights sum to zero")
    rows = []
    for predictions, weight in members.values():
        for rank in range(k):
            rows.append(
                pd.DataFrame(
                    {
                        "image": predictions["image"].to_numpy(),
                        "id": [p.split()[rank] if len(p.split()) > rank else "" for p in predictions["predicted"]],
                        "votes": float(weight) * (k - rank),
                    }
                )
            )
    votes = pd.concat(rows)
    votes = votes[votes["id"] != ""].groupby(["image", "id"], as_index=False)["votes"].sum()
    # Queries in the first member's order; ranked on the raw sums, so the share cannot make ties.
    first = next(iter(members.values()))[0]
    votes["order"] = query_order(first["image"], votes["image"])
    ranked = votes.sort_values(["order", "votes", "id"], ascending=[True, False, True], kind="stable")
    if depth is not None:
        ranked = ranked.groupby("image", sort=False).head(depth)
    share = (ranked["votes"] / (k * total)).astype(np.float32)
    ranked = ranked.assign(rank=ranked.groupby("image").cumcount(), similarity=share)
    extra = [c for c in ("fold", "truth") if c in first]
    if extra:
        ranked = ranked.merge(first[["image", *extra]].drop_duplicates("image"), on="image", how="left")
    return ranked[["image", "rank", "id", "similarity", *extra]].reset_index(drop=True)


def voted_lists(votes: pd.DataFrame, queries: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Kaggle lists of a vote_topk table: each query's k most-voted ids, in the order of
    `queries` (a member's predictions: image[, fold, truth]), as image[, fold, truth], predicted."""
    lists = votes[votes["rank"] < k].groupby("image", sort=False)["id"].apply(" ".join)
    out = queries[[c for c in ("image", "fold", "truth") if c in queries]].copy()
    out["predicted"] = lists.loc[out["image"]].to_numpy()
    return out


def vote_predictions(members: dict[str, tuple[pd.DataFrame, float]], k: int = 5) -> pd.DataFrame:
    """The voted Kaggle lists (vote_topk's first k ids) of the members' predictions."""
    return voted_lists(vote_topk(members, k), next(iter(members.values()))[0], k)


# What the ensemble's top-k tables hold in their similarity column (summary.json "score").
SIMILARITY, VOTES = "similarity", "votes"


@dataclass
class Combined:
    """One ensemble method's result: the top-k tables it ranked by (their similarity column holds
    `score`), the Kaggle lists, and the new_whale threshold."""

    score: str
    threshold: float
    val_topk: pd.DataFrame
    test_topk: pd.DataFrame
    val_predictions: pd.DataFrame
    test_predictions: pd.DataFrame
    new_share: dict | None = None  # new_share_report: estimated, used (None: a vote, not calibrated)


def member_tables(members: dict[str, tuple[Path, float]], name: str) -> dict[str, tuple[pd.DataFrame, float]]:
    """member -> (its `name` table, e.g. test_topk.parquet, and its weight)."""
    return {n: (pd.read_parquet(d / name), w) for n, (d, w) in members.items()}


def member_fallbacks(members: dict[str, tuple[Path, float]]) -> dict[str, float]:
    """member -> the score of an identity it did not list, for members whose summary.json fixes
    one (`outside_similarity`: the local member, which matched only a shortlist); the others use
    their lowest listed similarity."""
    fallbacks = {}
    for n, (d, _) in members.items():
        summary = Path(d) / "summary.json"
        # The rules always pass a member's summary; tables assembled by hand may come without one.
        value = json.loads(summary.read_text()).get("outside_similarity") if summary.is_file() else None
        if value is not None:
            fallbacks[n] = float(value)
    return fallbacks


def fitted_members(
    members, settings: EnsembleSettings | LocalMatchSettings
) -> tuple[dict[str, tuple[Path, float]], dict | None]:
    """The members with their weights fitted on the validation folds (match.ensemble.weights: fit,
    the default; match/ensemble_weights.py), or as configured (weights: config, or a single
    member); and the fit's report for summary.json."""
    fusion = settings.ensemble
    if fusion.weights != "fit" or len(members) < 2:
        return members, None
    fallbacks = member_fallbacks(members)
    prior = {n: w for n, (_, w) in members.items()}
    embedding_members = {n: m for n, m in members.items() if n not in fallbacks}
    if fallbacks and embedding_members:
        # A local member (it has a fixed fallback) must earn its place: the reference the fit has
        # to beat by weight_min_gain is the embedding members' own ensemble (fitted the same way),
        # with the local member at 0. Against the configured weights, an untested local member at
        # its configured weight would lower the bar (Omniglot seed 1: kept all four at 0.25).
        own, _ = fitted_members(embedding_members, settings)
        prior = {**{n: w for n, (_, w) in own.items()}, **{n: 0.0 for n in fallbacks}}
    tables = {n: table for n, (table, _) in member_tables(members, "val_topk.parquet").items()}
    weights, report = fit_weights(
        tables,
        prior,
        threshold_grid(settings.threshold_grid),
        float(fusion.weight_step),
        int(settings.top_k),
        float(fusion.weight_min_gain),
        fallbacks,
    )
    if fallbacks and embedding_members:
        report["configured_weights"] = "the embedding members' ensemble weights, local members at 0"
    return {n: (d, weights[n]) for n, (d, _) in members.items()}, report


def new_share_report(val_topk: pd.DataFrame, test_topk: pd.DataFrame, setting) -> dict:
    """summary.json's new_share: the share of new individuals estimated among the test photos (EM,
    with its bootstrap interval), the validation share, and the share the threshold and the
    decision cuts are chosen for (match.new_share)."""
    estimate = estimate_new_share(val_topk, test_topk)
    used = target_share(setting, estimate, estimate.validation_share)
    log.info(
        "new share: estimated %.3f (%.3f-%.3f) of %d test photos, validation %.3f; used %.3f (match.new_share: %s)",
        estimate.estimate,
        estimate.low,
        estimate.high,
        estimate.photos,
        estimate.validation_share,
        used,
        setting,
    )
    return {"setting": setting, "used": used, **estimate.to_json()}


def reweighting(share: dict) -> float | None:
    """The share to reweight validation to; None for match.new_share: validation, which keeps the
    plain validation MAP@5 (bit for bit: no weights of 1.0 through another summation)."""
    return None if share["setting"] == VALIDATION else share["used"]


def average_members(members, settings: EnsembleSettings, round_, out: Path, scope: Scoping | None = None) -> Combined:
    """Weighted mean similarities; the threshold calibrated on the validation folds (curve
    written), for the share of new individuals that match.new_share names. With a `scope`, the
    fused candidates are scoped (match/scope.py) before anything is calibrated on them."""
    k, depth = int(settings.top_k), int(settings.candidates)
    fallbacks = member_fallbacks(members)
    # Scoped: every fused candidate first (the union of the members' lists), the depth after.
    fused = depth if scope is None else None
    val_topk = ensemble_topk(member_tables(members, "val_topk.parquet"), fused, fallbacks)
    test_topk = ensemble_topk(member_tables(members, "test_topk.parquet"), fused, fallbacks)
    if scope is not None:
        val_topk, test_topk = scope.apply(val_topk, test_topk, depth)
    share = new_share_report(val_topk, test_topk, settings.new_share)
    threshold, curve = decide_threshold(val_topk, settings, reweighting(share))
    write_calibration(curve, threshold, out, title=f"ensemble, round {round_}")
    lists = [ranked_predictions(topk, threshold, k, settings.new_whale_score) for topk in (val_topk, test_topk)]
    return Combined(SIMILARITY, threshold, val_topk, test_topk, *lists, new_share=share)


def vote_members(members, settings: EnsembleSettings, out: Path, scope: Scoping | None = None) -> Combined:
    """Weighted vote over the members' lists. Nothing to calibrate: each member placed new_whale by
    its own threshold; the mean of those is reported (and cuts the pseudo-labels). With a `scope`,
    the voted ids are scoped (match/scope.py) before the lists are cut."""
    k, depth = int(settings.top_k), int(settings.candidates)
    val_predictions = member_tables(members, "val_predictions.parquet")
    test_predictions = member_tables(members, "test_predictions.parquet")
    voted = depth if scope is None else None
    val_votes, test_votes = vote_topk(val_predictions, k, voted), vote_topk(test_predictions, k, voted)
    if scope is not None:
        val_votes, test_votes = scope.apply(val_votes, test_votes, depth)
    thresholds = [pd.read_json(d / "summary.json", typ="series")["threshold"] for d, _ in members.values()]
    threshold = float(np.mean(thresholds))
    write_csv_atomic(
        pd.DataFrame({"threshold": [threshold], "map5": [np.nan], "new_whale_top1": [np.nan]}), out / "calibration.csv"
    )
    plot_calibration(
        pd.DataFrame({"threshold": [threshold], "map5": [0.0], "new_whale_top1": [0.0]}),
        threshold,
        out / "calibration.png",
        "vote: members' own thresholds",
    )
    # The lists follow the first member's query order, as its predictions do.
    val_queries, test_queries = next(iter(val_predictions.values()))[0], next(iter(test_predictions.values()))[0]
    lists = [
        voted_lists(votes, queries, k) for votes, queries in ((val_votes, val_queries), (test_votes, test_queries))
    ]
    return Combined(VOTES, threshold, val_votes, test_votes, *lists)


def similarity_topk(combined: Combined, members, split: str, depth: int) -> pd.DataFrame:
    """The split's candidates scored in similarity, the unit of the pseudo-label cut: the
    average's own table; for a vote (votes are no similarity), the members' weighted mean."""
    if combined.score == SIMILARITY:
        return combined.val_topk if split == "val" else combined.test_topk
    return ensemble_topk(member_tables(members, f"{split}_topk.parquet"), depth, member_fallbacks(members))


def ensemble_pseudo_labels(
    combined: Combined, members, settings: EnsembleSettings, round_
) -> tuple[pd.DataFrame, float, dict | None]:
    """The test pseudo-labels for round r + 1, the similarity cut used and, for the "auto" cut,
    its calibration on the validation folds."""
    depth = int(settings.candidates)
    pseudo = settings.pseudo_labels
    min_margin = float(pseudo.min_margin)
    min_similarity, calibration = pseudo.min_similarity, None
    if min_similarity == "auto":
        val_topk = similarity_topk(combined, members, "val", depth)
        min_precision = float(pseudo.min_precision)
        # The vote calibrates no share (new_share None): the validation images as they are.
        share = reweighting(combined.new_share) if combined.new_share else None
        min_similarity, calibration = calibrated_pseudo_label_cut(
            val_topk, combined.threshold, min_precision, min_margin, share, settings.new_whale_score
        )
    test_topk = similarity_topk(combined, members, "test", depth)
    labels = select_pseudo_labels(
        test_topk, combined.threshold, float(min_similarity), min_margin, round_, settings.new_whale_score
    )
    return labels, float(min_similarity), calibration


def without_local(members, settings: EnsembleSettings, share: float | None) -> dict | None:
    """With a local member (members: as configured, before the fit): the embedding members' own
    ensemble (their weights fitted without it, its threshold, chosen for the ensemble's new
    `share`, and validation scores), for summary.json. It is what the run would have submitted
    without the local member, and the threshold a user of the embeddings alone (the gallery's
    `identify`, which has no local matcher) needs: the fused score's threshold is on another scale."""
    local = member_fallbacks(members)
    embedding_members = {n: m for n, m in members.items() if n not in local}
    if not local or not embedding_members:
        return None
    own, _ = fitted_members(embedding_members, settings)
    k, depth = int(settings.top_k), int(settings.candidates)
    val_topk = ensemble_topk(member_tables(own, "val_topk.parquet"), depth)
    threshold, _ = decide_threshold(val_topk, settings, share)
    return {
        "members": {n: w for n, (_, w) in own.items()},
        "threshold": threshold,
        "cv": prediction_scores(ranked_predictions(val_topk, threshold, k, settings.new_whale_score)),
    }


@dataclass
class Scoping:
    """The run's match.scope (match/scope.py) and what it removed from each split's candidates."""

    scope: object  # scope.Scope
    reports: dict

    def apply(self, val_topk: pd.DataFrame, test_topk: pd.DataFrame, depth: int):
        from flukeline.match.scope import scope_topk

        val_topk, self.reports["val"] = scope_topk(val_topk, self.scope, depth)
        test_topk, self.reports["test"] = scope_topk(test_topk, self.scope, depth)
        return val_topk, test_topk


def run_scoping(
    settings: EnsembleSettings, train_path, test_path, viewpoints_path=None, viewpoint_summary_path=None
) -> tuple[Scoping | None, dict]:
    """The scope of the run's image tables (None without metadata or with every rule off: the
    ensemble is then exactly as without scope) and summary.json's scope entry. viewpoints_path /
    viewpoint_summary_path: the viewpoint estimate's table and summary (match.scope.estimate)."""
    from flukeline.match.scope import build_scope, scope_report
    from flukeline.match.viewpoint_estimate import estimate_report, with_estimated_viewpoints

    estimate = estimate_report(viewpoint_summary_path)
    extra = {"viewpoint_estimate": estimate} if estimate is not None else {}
    if train_path is None or test_path is None:
        return None, {**scope_report(None, {}), **extra}
    train, test = with_estimated_viewpoints(pd.read_parquet(train_path), pd.read_parquet(test_path), viewpoints_path)
    scope = build_scope(settings.scope, train, test)
    return (Scoping(scope, {}) if scope is not None else None), {**scope_report(scope, {}), **extra}


def run_ensemble(
    member_dirs,
    member_weights,
    params,
    round_,
    out_dir,
    pseudo_labels_path,
    train_path=None,
    test_path=None,
    viewpoints_path=None,
    viewpoint_summary_path=None,
) -> None:
    """results/match/round<r>/ensemble/: the members' weighted average (threshold calibrated on
    the validation folds) or weighted vote, the top-k tables it ranked by (val_topk.parquet,
    test_topk.parquet; summary.json "score" says whether they hold similarities or vote shares),
    and the pseudo-labels for round r + 1. params: EnsembleSettings' keys (the ensemble rule's JSON).
    train_path / test_path: the image tables, whose date, place and side match.scope reads;
    viewpoints_path / viewpoint_summary_path: the viewpoint estimate (match/viewpoint_estimate.py)."""
    settings = EnsembleSettings.of(params)
    scoping, scope_summary = run_scoping(settings, train_path, test_path, viewpoints_path, viewpoint_summary_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = settings.ensemble.method
    # results/match/round<r>/<member> is "<member>@round<r>" in summary.json.
    members = {
        f"{Path(d).name}@{Path(d).parent.name}": (Path(d), float(w)) for d, w in zip(member_dirs, member_weights)
    }
    weight_fit, configured = None, members
    if method == "average":
        # Members with weight 0 stay in the tables (their candidates count at weight 0).
        members, weight_fit = fitted_members(members, settings)
        combined = average_members(members, settings, round_, out, scoping)
    elif method == "vote":
        combined = vote_members(members, settings, out, scoping)
    else:
        raise ValueError(f"match.ensemble.method: unknown {method!r} (average, vote)")
    write_combined(combined, out)
    labels, min_similarity, pseudo_calibration = ensemble_pseudo_labels(combined, members, settings, round_)
    write_parquet_atomic(labels, pseudo_labels_path)
    summary = {
        "method": method,
        "score": combined.score,
        "threshold": combined.threshold,
        # What the threshold is compared with (match/cohort.py): the review page and the gallery read it.
        "new_whale_score": settings.new_whale_score,
        "members": {n: w for n, (_, w) in members.items()},
        "weights": "fitted" if weight_fit else "config",
        "weight_fit": weight_fit,
        "cv": prediction_scores(combined.val_predictions),
        "test_new_whale_top1": new_whale_top1_share(combined.test_predictions),
        "new_share": combined.new_share,
        "pseudo_labels": len(labels),
        "pseudo_label_min_similarity": min_similarity if np.isfinite(min_similarity) else None,
        "pseudo_label_calibration": pseudo_calibration,
        "scope": {**scope_summary, **(scoping.reports if scoping else {})},
    }
    if method == "average":
        reference = without_local(configured, settings, reweighting(combined.new_share))
        if reference is not None:
            summary["without_local"] = reference
    write_json_atomic(summary, out / "summary.json")
    log.info(
        "ensemble round %d (%s): threshold %.3f, CV MAP@5 %.4f, %d pseudo-labels",
        round_,
        method,
        combined.threshold,
        summary["cv"]["map5"],
        len(labels),
    )


def write_combined(combined: Combined, out: Path) -> None:
    """The ensemble's top-k tables and Kaggle lists, val and test."""
    write_parquet_atomic(combined.val_topk, out / "val_topk.parquet")
    write_parquet_atomic(combined.test_topk, out / "test_topk.parquet")
    write_parquet_atomic(combined.val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(combined.test_predictions, out / "test_predictions.parquet")
