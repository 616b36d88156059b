"""Match-stage rules: one member's candidates and calibrated predictions, and the ensemble of the
members of a pseudo-label round (with the pseudo-labels for the next round)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.io import write_csv_atomic, write_json_atomic, write_parquet_atomic
from flukeline.match import (
    PSEUDO_LABEL_MIN_SUPPORT,
    calibrate_pseudo_label_similarity,
    calibrate_threshold,
    ensemble_topk,
    member_topk,
    ranked_predictions,
    select_pseudo_labels,
    vote_predictions,
)
from flukeline.metrics import NEW_WHALE, summarise

log = logging.getLogger(__name__)


def threshold_grid(params: dict) -> np.ndarray:
    low, high, step = params.get("threshold_grid", [-0.2, 1.0, 0.01])
    return np.round(np.arange(low, high + step / 2, step), 6)


def decide_threshold(val_topk: pd.DataFrame, params: dict) -> tuple[float, pd.DataFrame]:
    """Calibrated on the validation folds (max MAP@5), or the fixed config value."""
    k = int(params.get("top_k", 5))
    calibrated, curve = calibrate_threshold(val_topk, threshold_grid(params), k)
    setting = params.get("new_whale_threshold", "calibrate")
    return (calibrated if setting == "calibrate" else float(setting)), curve


def _scores(predictions: pd.DataFrame) -> dict:
    return summarise(predictions["truth"].tolist(), [p.split() for p in predictions["predicted"]])


def run_member(train_path, embedding_paths, folds, params, out_dir) -> None:
    """results/match/round<r>/<member>/: top-k candidates (val, test), calibration curve, and
    the member's own predictions with its calibrated threshold."""
    from flukeline.errors import InputError

    if len(folds) != len(embedding_paths):
        raise InputError(f"{len(folds)} folds but {len(embedding_paths)} embedding tables were given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(train_path)
    embeddings = {int(f): pd.read_parquet(p) for f, p in zip(folds, embedding_paths)}
    val_topk, test_topk = member_topk(train, embeddings, params)
    threshold, curve = decide_threshold(val_topk, params)
    k = int(params.get("top_k", 5))
    val_predictions = ranked_predictions(val_topk, threshold, k)
    test_predictions = ranked_predictions(test_topk, threshold, k)
    write_parquet_atomic(val_topk, out / "val_topk.parquet")
    write_parquet_atomic(test_topk, out / "test_topk.parquet")
    write_parquet_atomic(val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(test_predictions, out / "test_predictions.parquet")
    _write_calibration(curve, threshold, out, title=out.name)
    summary = {"threshold": threshold, "cv": _scores(val_predictions), "test_new_whale_top1": _new_top1(test_predictions)}
    write_json_atomic(summary, out / "summary.json")
    log.info("member %s: threshold %.3f, CV MAP@5 %.4f", out.name, threshold, summary["cv"]["map5"])


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
        _write_calibration(curve, threshold, out, title=f"ensemble, round {round_}")
    elif method == "vote":
        val_predictions = vote_predictions({n: (pd.read_parquet(d / "val_predictions.parquet"), w) for n, (d, w) in members.items()}, k)
        test_predictions = vote_predictions({n: (pd.read_parquet(d / "test_predictions.parquet"), w) for n, (d, w) in members.items()}, k)
        # Voting has no similarity: candidates for pseudo-labels come from the averaged lists.
        test_topk = ensemble_topk({n: (pd.read_parquet(d / "test_topk.parquet"), w) for n, (d, w) in members.items()}, depth)
        threshold = float(np.mean([pd.read_json(d / "summary.json", typ="series")["threshold"] for d, _ in members.values()]))
        write_csv_atomic(pd.DataFrame({"threshold": [threshold], "map5": [np.nan], "new_whale_top1": [np.nan]}), out / "calibration.csv")
        _plot_calibration(pd.DataFrame({"threshold": [threshold], "map5": [0.0], "new_whale_top1": [0.0]}), threshold, out / "calibration.png", "vote: members' own thresholds")
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
        min_similarity, pseudo_calibration = _calibrate_pseudo_labels(val_topk, threshold, float(pseudo.get("min_precision", 0.9)), min_margin)
    labels = select_pseudo_labels(test_topk, threshold, float(min_similarity), min_margin, round_)
    write_parquet_atomic(labels, pseudo_labels_path)
    summary = {
        "method": method, "threshold": threshold, "members": {n: w for n, (_, w) in members.items()},
        "cv": _scores(val_predictions), "test_new_whale_top1": _new_top1(test_predictions), "pseudo_labels": len(labels),
        "pseudo_label_min_similarity": float(min_similarity) if np.isfinite(float(min_similarity)) else None,
        "pseudo_label_calibration": pseudo_calibration,
    }
    write_json_atomic(summary, out / "summary.json")
    log.info("ensemble round %d (%s): threshold %.3f, CV MAP@5 %.4f, %d pseudo-labels", round_, method, threshold, summary["cv"]["map5"], len(labels))


def _calibrate_pseudo_labels(val_topk: pd.DataFrame, threshold: float, min_precision: float, min_margin: float) -> tuple[float, dict]:
    """match.pseudo_labels.min_similarity: auto -- the cut the validation folds support, and what
    it took there (inf and a logged reason when no cut reaches the precision)."""
    similarity, curve = calibrate_pseudo_label_similarity(val_topk, threshold, min_precision, min_margin)
    at = curve[curve["similarity"] >= similarity]
    found = bool(np.isfinite(similarity))
    report = {
        "min_precision": min_precision, "min_support": PSEUDO_LABEL_MIN_SUPPORT, "validation_images": int(val_topk["image"].nunique()),
        "validation_taken": int(at["taken"].max()) if found else 0,
        "validation_precision": float(at["precision"].iloc[-1]) if found else None,
    }
    if found:
        log.info("pseudo-labels: similarity >= %.3f takes %d validation images at precision %.3f (>= %.2f asked)",
                 similarity, report["validation_taken"], report["validation_precision"], min_precision)
    else:
        best = curve[curve["taken"] >= PSEUDO_LABEL_MIN_SUPPORT]["precision"].max() if len(curve) else float("nan")
        log.warning("pseudo-labels: no similarity cut reaches precision %.2f on >= %d validation images (best %.3f); "
                    "none taken", min_precision, PSEUDO_LABEL_MIN_SUPPORT, best)
    return similarity, report


def _new_top1(predictions: pd.DataFrame) -> float:
    """Share of images whose first guess is new_whale (3rd place: ~27.6% on Kaggle's test set)."""
    return float(np.mean([p.split()[0] == NEW_WHALE for p in predictions["predicted"]])) if len(predictions) else float("nan")


def _write_calibration(curve: pd.DataFrame, threshold: float, out: Path, title: str) -> None:
    write_csv_atomic(curve, out / "calibration.csv")
    _plot_calibration(curve, threshold, out / "calibration.png", title)


def _plot_calibration(curve: pd.DataFrame, threshold: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["threshold"], curve["map5"], label="validation MAP@5")
    ax.plot(curve["threshold"], curve["new_whale_top1"], label="new_whale top-1 share", linestyle="--")
    ax.axvline(threshold, color="grey", linewidth=1)
    ax.set_xlabel("new_whale threshold (cosine similarity)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: threshold {threshold:.2f}")
    ax.legend(loc="best")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
