"""The new_whale threshold and the Kaggle lists: the threshold maximising validation MAP@5 (or, for
a target share of new individuals, the expected MAP@5 of photos with that share: match/new_share.py)
or the fixed `match.new_whale_threshold`, its curve (calibration.csv and .png, with the share of
validation images whose top-1 is new_whale), new_whale inserted into each image's candidates at the
threshold (predictions: image, predicted, best_similarity, plus fold and truth on validation), and
the scores that a member's or the ensemble's summary.json reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.figures import new_figure, save_figure
from flukeline.core.io import write_csv_atomic
from flukeline.core.metrics import NEW_WHALE, summarise
from flukeline.core.retrieval import best_threshold, map5_by_threshold, rank_with_new_whale, threshold_grid
from flukeline.match.cohort import SIMILARITY, threshold_offsets
from flukeline.match.new_share import class_weights
from flukeline.match.settings import RankingSettings
from flukeline.match.tables import to_wide


def threshold_scores(topk: pd.DataFrame, k: int, score: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, ids, scores): the top-k table wide, each candidate's similarity less its photo's
    offset for `score` (match/cohort.py): the values the new_whale threshold is compared with."""
    images, ids, sims = to_wide(topk, k)
    return images, ids, sims - threshold_offsets(topk, images, score)[:, None]


def calibrate_threshold(
    val_topk: pd.DataFrame, grid, k: int = 5, share: float | None = None, score: str = SIMILARITY
) -> tuple[float, pd.DataFrame]:
    """The threshold maximising validation MAP@k (ties: the lowest), and the whole curve with
    each threshold's share of validation images whose top-1 is new_whale. With `share` (of new
    individuals among the photos to match), the validation photos are importance-weighted to that
    share and the threshold maximises that expected MAP@k (curve column map5_at_share). `score`:
    what the threshold is compared with (similarity: the plain rule; lift: match/cohort.py)."""
    truth = val_topk.drop_duplicates("image").set_index("image")["truth"]
    images, ids, sims = threshold_scores(val_topk, k, score)
    truth = truth.loc[images].to_numpy()
    grid = np.asarray(grid, dtype=np.float64)
    is_new = truth == NEW_WHALE
    weights = None if share is None else class_weights(is_new, float(is_new.mean()), share)
    threshold, _, scores = best_threshold(truth, ids, sims, grid, k, weights)
    new_top1 = [(sims[:, 0] < t).mean() for t in grid]
    curve = pd.DataFrame({"threshold": grid, "map5": map5_by_threshold(truth, ids, sims, grid, k)})
    if share is not None:
        curve["map5_at_share"] = scores
    curve["new_whale_top1"] = new_top1
    return threshold, curve


def ranked_predictions(topk: pd.DataFrame, threshold: float, k: int = 5, score: str = SIMILARITY) -> pd.DataFrame:
    """Kaggle lists: candidates with new_whale inserted at the threshold, compared with `score`
    (image, predicted, best_similarity: the raw similarity)."""
    images, ids, sims = to_wide(topk, k)
    scores = sims - threshold_offsets(topk, images, score)[:, None]
    ranked = rank_with_new_whale(
        [[i for i in row if i] for row in ids], [row[np.isfinite(row)] for row in scores], threshold, k
    )
    out = pd.DataFrame({"image": images, "predicted": [" ".join(r) for r in ranked], "best_similarity": sims[:, 0]})
    extra = [c for c in ("fold", "truth") if c in topk]
    if extra:
        out = out.merge(topk.drop_duplicates("image")[["image", *extra]], on="image", how="left")
    return out


def decide_threshold(
    val_topk: pd.DataFrame, settings: RankingSettings, share: float | None = None
) -> tuple[float, pd.DataFrame]:
    """Calibrated on the validation folds (max MAP@5, or expected MAP@5 at a new `share`), or the
    fixed config value."""
    grid = threshold_grid(settings.threshold_grid)
    calibrated, curve = calibrate_threshold(val_topk, grid, int(settings.top_k), share, settings.new_whale_score)
    setting = settings.new_whale_threshold
    return (calibrated if setting == "calibrate" else float(setting)), curve


def prediction_scores(predictions: pd.DataFrame) -> dict:
    return summarise(predictions["truth"].tolist(), [p.split() for p in predictions["predicted"]])


def new_whale_top1_share(predictions: pd.DataFrame) -> float:
    """Share of images whose first guess is new_whale (3rd place: ~27.6% on Kaggle's test set)."""
    return (
        float(np.mean([p.split()[0] == NEW_WHALE for p in predictions["predicted"]]))
        if len(predictions)
        else float("nan")
    )


def write_calibration(curve: pd.DataFrame, threshold: float, out: Path, title: str) -> None:
    write_csv_atomic(curve, out / "calibration.csv")
    plot_calibration(curve, threshold, out / "calibration.png", title)


def plot_calibration(curve: pd.DataFrame, threshold: float, path: Path, title: str) -> None:
    fig, ax = new_figure(figsize=(6, 3.5))
    ax.plot(curve["threshold"], curve["map5"], label="validation MAP@5")
    if "map5_at_share" in curve:
        ax.plot(curve["threshold"], curve["map5_at_share"], label="expected MAP@5 at the new share")
    ax.plot(curve["threshold"], curve["new_whale_top1"], label="new_whale top-1 share", linestyle="--")
    ax.axvline(threshold, color="grey", linewidth=1)
    ax.set_xlabel("new_whale threshold")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}: threshold {threshold:.2f}")
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)
