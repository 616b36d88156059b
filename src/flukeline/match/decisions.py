"""From ranked lists to decisions (the `decide` rule): every test photo becomes `match` (its top
identity accepted automatically), `new` (a new individual, automatically) or `review` (a person
decides, on the review page), with P(top identity is right) and P(new individual) beside it.

The probabilities come from the final ensemble's evidence (top score, margin to the runner-up),
calibrated on the validation folds (match/decision_calibration.py). The operating points are the
config's precision targets, `match.decision.auto_accept_precision` and `auto_new_precision`:
each cut is the lowest probability at which the validation photos above it are right at least
that often (on at least `min_support` photos). They are chosen and measured on out-of-fold
probabilities, each validation photo's from a model fitted without it, so the measured precision
is not the fit's own; test photos get the model fitted on all validation photos, cut at the same
probabilities.

Encounters: where the ingest tables have an `encounter` column (photos of one animal on one day),
the photos sharing a value are decided together: their identity scores are averaged, and one
decision and one set of probabilities cover them all. On validation, an encounter is grouped
within its fold.

Written: results/decisions.csv (Image, decision, Id, candidate, p_correct, p_new, top_score, margin,
encounter, photos, then the test table's date, location, latitude, longitude and viewpoint where it
has them, and new_group: the provisional id of a new individual's group, match/new_groups.py),
results/decisions/summary.json (targets, thresholds, validation shares and
precision, test shares), calibration.json (the two fitted models) and reliability.png (the report's
reliability curve). Precision against the test truth, where one exists, is the evaluate stage's
(`flukeline decision-scores`): this stage never reads it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.figures import new_figure, save_figure
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic, write_json_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.metadata import metadata_columns
from flukeline.match.decision_calibration import (
    OperatingPoint,
    choose_threshold,
    fit_calibrator,
    fold_keys,
    out_of_fold,
    photo_evidence,
    reliability_bins,
)
from flukeline.match.new_share import adjust_decision_probabilities, class_weights
from flukeline.match.settings import DecisionSettings

log = logging.getLogger(__name__)

MATCH, NEW, REVIEW = "match", "new", "review"
CLASSES = (MATCH, NEW, REVIEW)
# What the classes mean, in the words the summary and the review page use.
CLASS_LABELS = {MATCH: "auto-accepted match", NEW: "new individual (automatic)", REVIEW: "to review"}
DECISION_COLUMNS = [
    "Image",
    "decision",
    "Id",
    "candidate",
    "p_correct",
    "p_new",
    "top_score",
    "margin",
    "encounter",
    "photos",
]
# Seeded random parts of the validation photos that the out-of-fold probabilities are fitted on
# when the validation has a single fold (the default config): five, so that each model is fitted
# on 80% of the photos. No config key: the operating points' precision is measured, not tuned.
CROSS_FIT_SPLITS = 5
ENCOUNTER = "encounter"


def precision_targets(settings: DecisionSettings) -> dict[str, float]:
    """The operating points' target precisions (correct: auto-accept, new: auto-new), checked."""
    targets = {"correct": settings.auto_accept_precision, "new": settings.auto_new_precision}
    for name, key in (("correct", "auto_accept_precision"), ("new", "auto_new_precision")):
        if not 0 < float(targets[name]) <= 1:
            raise InputError(f"match.decision.{key}: {targets[name]} is no precision in (0, 1]")
    return {name: float(value) for name, value in targets.items()}


def encounter_groups(table: pd.DataFrame, by_fold: pd.Series | None = None) -> pd.Series | None:
    """image -> encounter key (within the photo's fold when `by_fold`, image -> fold, is given);
    None when the table has no encounter column. Photos with an empty encounter stand alone."""
    if ENCOUNTER not in table:
        return None
    values = table.set_index("image")[ENCOUNTER].astype("string").fillna("")
    values = values[values.str.strip() != ""]
    if by_fold is not None:
        folds = by_fold.reindex(values.index)
        values = folds.astype(str) + "/" + values[folds.notna()]
        values = values.dropna()
    return values.astype(str)


def with_truth(val_topk: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """The validation top-k table with its truth column (the ensemble writes one; else derived
    from the train table's folds, core.folds.validation_truth)."""
    if "truth" in val_topk:
        return val_topk
    if "fold" not in val_topk:
        raise InputError("validation top-k table: no fold column to find each photo's truth by")
    truth = pd.concat([validation_truth(train, int(f)) for f in sorted(val_topk["fold"].unique())])
    return val_topk.assign(truth=truth.reindex(val_topk["image"]).to_numpy())


def classify(p_correct: np.ndarray, p_new: np.ndarray, match_cut: float, new_cut: float) -> np.ndarray:
    """match / new / review: a photo over both cuts (contradictory evidence) goes to review."""
    accept, new = p_correct >= match_cut, p_new >= new_cut
    return np.where(accept & ~new, MATCH, np.where(new & ~accept, NEW, REVIEW))


def class_table(decision: np.ndarray, weight: np.ndarray, right: dict[str, np.ndarray] | None = None) -> dict:
    """Per class: photos, share of all photos, and (given `right`, per class a 0/1 array) precision."""
    total = float(weight.sum())
    out = {}
    for name in CLASSES:
        inside = decision == name
        photos = float(weight[inside].sum())
        entry = {"label": CLASS_LABELS[name], "photos": int(round(photos)), "share": photos / total if total else None}
        if right is not None and name in right:
            entry["precision"] = float(np.average(right[name][inside], weights=weight[inside])) if photos else None
        out[name] = entry
    return out


def plot_reliability(curves: dict[str, pd.DataFrame], cuts: dict[str, float], targets: dict[str, float], path) -> None:
    """Out-of-fold predicted probability against the observed rate on validation, per model; the
    point size is the photos in the bin, the dotted line the operating point's cut."""
    fig, axes = new_figure(1, 2, figsize=(9, 4))
    titles = {"correct": "P(top identity is right)", "new": "P(new individual)"}
    for ax, (name, curve) in zip(axes, curves.items()):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="perfect calibration")
        if len(curve):
            sizes = 20 + 200 * curve["photos"] / max(1, curve["photos"].max())
            ax.plot(curve["predicted"], curve["observed"], color="C0", linewidth=1)
            ax.scatter(curve["predicted"], curve["observed"], s=sizes, color="C0", label="validation (out-of-fold)")
        cut = cuts[name]
        if np.isfinite(cut):
            ax.axvline(cut, color="C3", linestyle=":", label=f"cut {cut:.2f} (precision >= {targets[name]:.2f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(titles[name])
        ax.set_xlabel("predicted probability" + ("" if np.isfinite(cut) else " (no cut reaches the target)"))
        ax.set_ylabel("observed rate")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def point_json(point: OperatingPoint, target: float) -> dict:
    return {
        "target_precision": target,
        "threshold": point.threshold if np.isfinite(point.threshold) else None,
        "validation_photos": point.taken,
        "validation_precision": point.precision,
    }


@dataclass
class ValidationFit:
    """What the validation folds give the decisions: the evidence per unit (photo or encounter),
    the 0/1 outcomes and unit weights, the out-of-fold probabilities, the operating points, the
    models fitted on all validation units, and the reliability curves."""

    units: pd.DataFrame
    outcomes: dict[str, np.ndarray]
    weight: np.ndarray
    cross_fit: str
    oof: dict[str, np.ndarray]
    points: dict[str, OperatingPoint]
    models: dict
    curves: dict[str, pd.DataFrame]
    # (validation share, target share) of new individuals when the probabilities and cuts were
    # moved to the target share (match.new_share); None: the validation share as it is.
    shift: tuple[float, float] | None = None

    @property
    def cuts(self) -> dict[str, float]:
        return {name: point.threshold for name, point in self.points.items()}


def fit_validation(
    val_topk: pd.DataFrame,
    train: pd.DataFrame,
    targets: dict[str, float],
    min_support: int,
    seed: int,
    share: float | None = None,
) -> ValidationFit:
    """P(correct) and P(new) models on the validation units, and the lowest cuts of their
    out-of-fold probabilities that reach the target precisions on at least min_support photos.
    With a new `share` (of new individuals among the test photos), the probabilities are moved to
    that share (Bayes' prior correction) and the precision is the validation photos'
    importance-weighted to it (match/new_share.py); min_support still counts photos."""
    val_topk = with_truth(val_topk, train)
    fold_of = val_topk.drop_duplicates("image").set_index("image")["fold"] if "fold" in val_topk else None
    val = photo_evidence(val_topk, encounter_groups(train, fold_of) if fold_of is not None else None)
    if val.empty:
        raise InputError("validation top-k table: no validation photos to calibrate the decisions on")
    truth = val["truth"].astype(str).to_numpy()
    outcomes = {"correct": (val["top_id"].to_numpy() == truth) & (truth != NEW_WHALE), "new": truth == NEW_WHALE}
    weight = val["size"].to_numpy(dtype=np.float64)
    keys, cross_fit = fold_keys(val, CROSS_FIT_SPLITS, seed)
    increasing = {"correct": True, "new": False}
    oof, points, models, curves = {}, {}, {}, {}
    for name in ("correct", "new"):
        outcome = outcomes[name].astype(np.float64)
        oof[name] = out_of_fold(val, outcome, increasing[name], keys)
        models[name] = fit_calibrator(val, outcome, increasing[name])
    validation_share = float(np.average(outcomes["new"], weights=weight))
    shift, precision_weight = None, weight
    if share is not None and 0 < validation_share < 1:
        shift = (validation_share, float(share))
        oof["correct"], oof["new"] = adjust_decision_probabilities(oof["correct"], oof["new"], *shift)
        precision_weight = weight * class_weights(outcomes["new"], *shift)
    for name in ("correct", "new"):
        outcome = outcomes[name].astype(np.float64)
        points[name] = choose_threshold(
            oof[name], outcome, precision_weight, targets[name], int(min_support), photos=weight
        )
        curves[name] = reliability_bins(oof[name], outcome, precision_weight)
    return ValidationFit(val, outcomes, weight, cross_fit, oof, points, models, curves, shift)


def decide_test_photos(
    test_topk: pd.DataFrame, test: pd.DataFrame, fit: ValidationFit
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the decisions table, one row per test photo in test-table order; the decided units)."""
    cuts = fit.cuts
    units = photo_evidence(test_topk, encounter_groups(test))
    p_correct, p_new = fit.models["correct"].predict(units), fit.models["new"].predict(units)
    if fit.shift is not None:
        p_correct, p_new = adjust_decision_probabilities(p_correct, p_new, *fit.shift)
    units = units.assign(
        p_correct=p_correct, p_new=p_new, decision=classify(p_correct, p_new, cuts["correct"], cuts["new"])
    )
    per_photo = units.explode("images").set_index("images")
    per_photo = per_photo.reindex(test["image"])
    encounter = encounter_groups(test)
    table = pd.DataFrame(
        {
            "Image": test["image"].to_numpy(),
            "decision": per_photo["decision"].to_numpy(),
            "Id": np.where(per_photo["decision"] == MATCH, per_photo["top_id"], ""),
            "candidate": per_photo["top_id"].to_numpy(),
            "p_correct": per_photo["p_correct"].round(4).to_numpy(),
            "p_new": per_photo["p_new"].round(4).to_numpy(),
            "top_score": per_photo["top_score"].round(4).to_numpy(),
            "margin": per_photo["margin"].round(4).to_numpy(),
            "encounter": encounter.reindex(test["image"]).fillna("").to_numpy() if encounter is not None else "",
            "photos": per_photo["size"].astype(int).to_numpy(),
        }
    )[DECISION_COLUMNS]
    # Date, place and side of each photo where ingest read them (flukeline.data.metadata), for the reader.
    for column in metadata_columns(test):
        table[column] = test[column].to_numpy()
    return table, units


def decision_summary(
    fit: ValidationFit, targets: dict[str, float], min_support: int, table: pd.DataFrame, units: pd.DataFrame
) -> dict:
    """summary.json: the classes, the operating points, how they were chosen, validation and test shares."""
    cuts = fit.cuts
    val_decision = classify(fit.oof["correct"], fit.oof["new"], cuts["correct"], cuts["new"])
    test_weight = np.ones(len(table))
    return {
        "classes": {name: CLASS_LABELS[name] for name in CLASSES},
        "evidence": list(("top_score", "margin")),
        "operating_points": {
            MATCH: point_json(fit.points["correct"], targets["correct"]),
            NEW: point_json(fit.points["new"], targets["new"]),
        },
        "threshold_choice": (
            "each cut is the lowest probability at which the validation photos at or above it reach the"
            f" target precision, on at least {int(min_support)} photos (out-of-fold probabilities:"
            " each validation photo's from a model fitted without it); no such cut: nothing is decided"
            " automatically in that class"
        ),
        "validation": {
            "photos": int(fit.weight.sum()),
            "units": len(fit.units),
            "cross_fit": fit.cross_fit,
            "classes": class_table(
                val_decision,
                fit.weight,
                {MATCH: fit.outcomes["correct"].astype(float), NEW: fit.outcomes["new"].astype(float)},
            ),
        },
        "test": {
            "photos": len(table),
            "units": len(units),
            "encounters": int((units["size"] > 1).sum()),
            "classes": class_table(table["decision"].to_numpy(), test_weight),
        },
    }


def decide(
    val_topk: pd.DataFrame,
    test_topk: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: DecisionSettings,
    seed: int = 0,
    share: float | None = None,
):
    """The decisions table (one row per test photo, in test-table order), the summary and the
    fitted models; see the module docstring. seed: the cross-fit's random parts (one fold only);
    share: the new share to move the probabilities and cuts to (None: validation's)."""
    targets = precision_targets(settings)
    missing = sorted(set(test["image"]) - set(test_topk["image"]))
    if missing:
        raise InputError(f"test top-k table: no candidates for {len(missing)} test photo(s), e.g. {missing[:3]}")
    fit = fit_validation(val_topk, train, targets, settings.min_support, seed, share)
    table, units = decide_test_photos(test_topk, test, fit)
    summary = decision_summary(fit, targets, settings.min_support, table, units)
    summary["new_share"] = (
        {"validation": fit.shift[0], "used": fit.shift[1], "precision": "validation photos weighted to the share used"}
        if fit.shift is not None
        else {"used": "validation"}
    )
    calibration = {
        "evidence": ["top_score", "margin"],
        "models": {"p_correct": fit.models["correct"].to_json(), "p_new": fit.models["new"].to_json()},
        "reliability": {name: curve.to_dict(orient="records") for name, curve in fit.curves.items()},
    }
    return table, summary, calibration, (fit.curves, fit.cuts, targets)


def ensemble_new_share(ensemble_summary: dict) -> float | None:
    """The new share the ensemble chose its threshold for (summary.json new_share, match.new_share),
    so that the threshold and the cuts serve one share; None for the validation share (the
    setting, or a vote ensemble, which calibrates nothing)."""
    share = ensemble_summary.get("new_share")
    if not share or share.get("setting") == "validation":
        return None
    return float(share["used"])


def run_decide(
    val_topk_path,
    test_topk_path,
    ensemble_summary_path,
    train_path,
    test_path,
    params,
    *,
    out,
    summary_out,
    calibration_out,
    figure_out,
    embedding_paths=(),
    embedding_folds=(),
) -> dict:
    """results/decisions.csv and results/decisions/{summary,calibration}.json, reliability.png.
    params: DecisionSettings' keys plus "seed" (the decide rule's JSON). embedding_paths (with the
    fold of each): the members' embeddings that group the new individuals (match/new_groups.py)."""
    values = dict(params or {})
    seed = int(values.pop("seed", 0))  # the rule passes the config's seed; 0 as the CLI's --seed
    settings = DecisionSettings.from_dict(values)
    ensemble = json.loads(Path(ensemble_summary_path).read_text())
    table, summary, calibration, plot = decide(
        pd.read_parquet(val_topk_path),
        pd.read_parquet(test_topk_path),
        pd.read_parquet(train_path),
        pd.read_parquet(test_path),
        settings,
        seed,
        ensemble_new_share(ensemble),
    )
    if embedding_paths and settings.new_groups.enabled:
        from flukeline.match.new_groups import group_new_photos, read_embeddings

        table, summary["new_groups"] = group_new_photos(
            table,
            pd.read_parquet(test_path),
            pd.read_parquet(train_path),
            read_embeddings(embedding_paths, embedding_folds),
            settings.new_groups,
        )
    # The evidence's unit: the ensemble's mean similarity, or its vote share.
    summary["score"] = calibration["score"] = ensemble.get("score", "similarity")
    plot_reliability(*plot, figure_out)
    write_csv_atomic(table, out)
    write_json_atomic(calibration, calibration_out)
    write_json_atomic(summary, summary_out)
    shares = {name: round(entry["share"], 3) for name, entry in summary["test"]["classes"].items()}
    log.info("decisions %s: test shares %s; operating points %s", out, shares, summary["operating_points"])
    return summary
