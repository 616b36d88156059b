"""Open-set scores of a method's predictions (metrics.json "open_set"): how well it tells new
individuals from known ones, beside MAP@5, which mixes that with ranking the known.

- auroc_new: the area under the ROC curve of new (truth new_whale) against known photos, ranked by
  a score that rises with "new" (the negated best similarity); threshold-free.
- baks / baus: balanced accuracy on known / unknown samples as wildlife-datasets defines them
  (Čermák et al. 2024, `wildlife_datasets.metrics`): the top-1 prediction's accuracy per true
  identity, averaged over the identities, on the photos of known identities (right = the
  identity) and on those of unknown ones (right = the new class). With a Kaggle-layout truth
  every unknown photo is labelled new_whale, one identity, so baus is the share of new photos
  whose top-1 is new_whale.
- new_share_true / new_share_predicted: the share of photos whose truth / whose top-1 is new_whale.

new_whale precision and recall (of the top-1) are in every entry already (core.metrics.summarise)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE


def balanced_accuracy(truth: np.ndarray, top1: np.ndarray, right: np.ndarray) -> float | None:
    """The mean over the true identities of the share of their photos whose top-1 is right
    (None without photos)."""
    if len(truth) == 0:
        return None
    return float(pd.Series(right, dtype=float).groupby(truth).mean().mean())


def open_set_scores(
    truths: Sequence[str], predictions: Sequence[Sequence[str]], new_scores: Sequence[float] | None = None
) -> dict:
    """auroc_new (None without scores, all NaN, or without both new and known photos), baks, baus,
    new_share_true, new_share_predicted; see the module docstring. predictions: ranked id lists."""
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truths, dtype=object)
    top1 = np.asarray([p[0] if len(p) else "" for p in predictions], dtype=object)
    new = truth == NEW_WHALE
    auroc = None
    has_scores = new_scores is not None and not np.all(np.isnan(np.asarray(new_scores, dtype=np.float64)))
    if has_scores and 0 < new.sum() < len(new):
        # Ranks: AUROC depends on the order only, and a photo without any candidate (best
        # similarity -inf, the most "new" there is) keeps its place, which roc_auc_score refuses.
        scores = np.nan_to_num(np.asarray(new_scores, dtype=np.float64), nan=-np.inf)
        auroc = float(roc_auc_score(new, rankdata(scores)))
    return {
        "auroc_new": auroc,
        "baks": balanced_accuracy(truth[~new], top1[~new], top1[~new] == truth[~new]),
        "baus": balanced_accuracy(truth[new], top1[new], top1[new] == NEW_WHALE),
        "new_share_true": float(new.mean()) if len(new) else None,
        "new_share_predicted": float((top1 == NEW_WHALE).mean()) if len(top1) else None,
    }


def new_scores_of(predictions: pd.DataFrame) -> np.ndarray | None:
    """A method's "new" score per photo: the negated best similarity of its predictions table (a
    vote ensemble's has none)."""
    if "best_similarity" not in predictions:
        return None
    return -predictions["best_similarity"].to_numpy(dtype=np.float64)
