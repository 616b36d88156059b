"""Ensemble weights fitted on the validation folds (`match.ensemble.weights: fit`): every point of a
simplex grid of member weights (multiples of `weight_step`, summing to 1) is scored by the
validation MAP@5 of the weighted mean of similarities, each with its own best new_whale threshold
on the config grid, and the best point wins. The grid holds every single member's corner, so the
fitted ensemble is never below its best member on validation, and a member that does not help
ends with a weight near 0 instead of dragging the others down (on small real sets a fine-tuned
member can score below the zero-shot one). The search is vectorised over one stacked table of
the members' candidates, so thousands of points cost seconds."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from flukeline.core.retrieval import best_threshold

log = logging.getLogger(__name__)


def simplex_grid(members: int, step: float) -> np.ndarray:
    """All weight vectors of `members` entries, multiples of `step`, summing to 1 (rows)."""
    parts = int(round(1.0 / step))
    if parts < 1 or abs(parts * step - 1.0) > 1e-6:
        raise ValueError(f"match.ensemble.weight_step {step} must divide 1 (0.1, 0.05, 0.25, ...)")
    points = [c for c in itertools.product(range(parts + 1), repeat=members - 1) if sum(c) <= parts]
    return np.array([[*c, parts - sum(c)] for c in points], dtype=np.float64) / parts


def stacked_candidates(
    tables: list[pd.DataFrame], fallbacks: list[float | None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The members' validation top-k tables as arrays over the union of their candidates:
    (query images Q, ids Q x C, similarities Q x C x M, truth Q); a candidate a member did not list
    counts with that member's lowest listed similarity for the query, or with its fixed fallback
    when one is given (as `ensemble_topk` does); padding is "" with -inf."""
    fallbacks = fallbacks or [None] * len(tables)
    key = ["image", "id"]
    union = pd.concat([t[key] for t in tables]).drop_duplicates().reset_index(drop=True)
    columns = []
    for table, fixed in zip(tables, fallbacks):
        value = union.join(table.set_index(key)["similarity"], on=key)["similarity"].to_numpy(np.float64)
        if fixed is None:
            fallback = table.groupby("image")["similarity"].min().loc[union["image"]].to_numpy(np.float64)
        else:
            fallback = np.full(len(union), float(fixed))
        columns.append(np.where(np.isnan(value), fallback, value))
    images = union["image"].drop_duplicates().to_numpy()
    row = pd.Series(np.arange(len(images)), index=images).loc[union["image"]].to_numpy()
    slot = union.groupby("image", sort=False).cumcount().to_numpy()
    width = int(slot.max()) + 1 if len(slot) else 0
    ids = np.full((len(images), width), "", dtype=object)
    sims = np.full((len(images), width, len(tables)), -np.inf)
    ids[row, slot] = union["id"].to_numpy()
    sims[row, slot] = np.stack(columns, axis=1)
    truth = tables[0].drop_duplicates("image").set_index("image")["truth"].loc[images].to_numpy()
    return images, ids, sims, truth


def score_weights(ids: np.ndarray, sims: np.ndarray, truth: np.ndarray, weights: np.ndarray, grid, k: int = 5):
    """(validation MAP@k at the best threshold, that threshold) of one weight vector."""
    with np.errstate(invalid="ignore"):  # -inf padding times a weight of 0 is nan: masked next
        scores = sims @ (weights / weights.sum())
    scores = np.where(ids == "", -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_ids = np.take_along_axis(ids, order, axis=1)
    top_sims = np.take_along_axis(scores, order, axis=1)
    threshold, map5, _ = best_threshold(truth, top_ids, top_sims, grid, k)
    return map5, threshold


def sparsest_ties(points: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """Of the tied best points (indices), those that fuse the fewest members. Validation that cannot
    tell a mixture from a member alone (a tiny catalogue: the mantas' 2 validation photos tie 18 of
    66 points, the local member's corner among them) has not tested the mixture's scale: members
    report on different scales (cosines; the local member's calibrated probabilities), and a
    mixture that ranks validation right because one member's scores are large there can be
    outvoted on test photos where they are small (the mantas' test photos: local probabilities near
    0, so the cosines decided and the submission put 2 of 5 first instead of the local member's 4).
    The member alone is the hypothesis validation did check. On the demo and Omniglot no point
    ties the best, so nothing changes there (bench/results/local.md)."""
    used = (points[tied] > 0).sum(axis=1)
    return tied[used == used.min()]


def fit_weights(
    val_tables: dict[str, pd.DataFrame],
    prior: dict[str, float],
    grid,
    step: float,
    k: int = 5,
    min_gain: float = 0.0,
    fallbacks: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict]:
    """Member -> weight (summing to 1), and a report: the best validation MAP@5, that of the
    configured weights, each member alone, how many points were scored, and which were kept. Ties
    go to the point with the fewest members (`sparsest_ties`), then to the one nearest the
    configured weights (normalised), the choice a user made without validation; and the configured
    weights stay unless the best point beats them by more than
    `min_gain` (on a few hundred validation images smaller gains are noise, and fitted weights
    that chase them lose on test: the demo's fit gained 0.004 on validation and lost 0.014 on test).
    fallbacks: member -> the fixed score of a candidate it did not list (see stacked_candidates)."""
    names = list(val_tables)
    fallbacks = fallbacks or {}
    _, ids, sims, truth = stacked_candidates([val_tables[n] for n in names], [fallbacks.get(n) for n in names])
    points = simplex_grid(len(names), step)
    configured = np.array([prior[n] for n in names], dtype=np.float64)
    configured = configured / configured.sum() if configured.sum() > 0 else np.full(len(names), 1 / len(names))
    scored = np.array([score_weights(ids, sims, truth, w, grid, k)[0] for w in points])
    best = scored.max()
    tied = sparsest_ties(points, np.flatnonzero(scored >= best - 1e-12))
    chosen = points[tied[np.argmin(np.abs(points[tied] - configured).sum(axis=1))]]
    # Each member alone on its own list: at the simplex corner the candidates it did not list tie at
    # its fallback and take the other members' order, so the corner is not the member alone.
    alone = {n: stacked_candidates([val_tables[n]], [fallbacks.get(n)]) for n in names}
    corners = {n: float(score_weights(a[1], a[2], a[3], np.ones(1), grid, k)[0]) for n, a in alone.items()}
    report = {
        "method": "simplex grid on the validation folds",
        "step": step,
        "points": len(points),
        "val_map5": float(best),
        "val_map5_configured_weights": float(score_weights(ids, sims, truth, configured, grid, k)[0]),
        "val_map5_member_alone": corners,
    }
    configured_score = report["val_map5_configured_weights"]
    report["min_gain"] = float(min_gain)
    report["kept"] = "fitted" if best - configured_score > min_gain else "configured"
    if report["kept"] == "configured":
        chosen = configured
    weights = {n: float(w) for n, w in zip(names, chosen)}
    log.info(
        "ensemble weights (%s) over %d points: %s (validation MAP@5 %.4f; configured weights %.4f; "
        "best member alone %.4f)",
        report["kept"],
        len(points),
        weights,
        best,
        report["val_map5_configured_weights"],
        max(corners.values()),
    )
    return weights, report
