"""A photo's candidates measured against its own cohort: the *lift* of an identity is its
similarity minus the mean similarity of the photo's next identities (ranks 2 to COHORT + 1), the
cohort-mean score normalisation of speaker and face verification (T-norm's mean, without the
spread, which a list of a few identities estimates badly).

Why the new_whale threshold is compared with the lift by default (`match.new_whale_score`): the
threshold is chosen on validation photos, matched against the other folds only, and applied to test
photos matched against the whole catalogue. With more photos per identity every identity's best
score rises, a new animal's top score with it, so a threshold on the raw similarity chosen on
validation calls too few test photos new; the shift moves the cohort as much as the top, and the
lift cancels it. Measured on finished runs at test new shares of 10-70%
(bench/results/new_share.md, issue 30): Omniglot MAP@5 up by 0.01-0.06, the demo's unchanged or up.
match/new_share.py estimates the share of new individuals from the same lift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE

# The cohort: the identities ranked 2 to COHORT + 1 of a photo's list.
COHORT = 9
LIFT, SIMILARITY = "lift", "similarity"
NEW_WHALE_SCORES = (LIFT, SIMILARITY)


def cohort_means(topk: pd.DataFrame) -> pd.Series:
    """image -> mean similarity of its identities ranked 2 to COHORT + 1 (new_whale rows skipped);
    photos listing one identity or none are absent."""
    table = topk[topk["id"] != NEW_WHALE]
    ranked = table.sort_values(["image", "similarity", "id"], ascending=[True, False, True], kind="stable")
    place = ranked.groupby("image", sort=False).cumcount().to_numpy()
    return ranked[(place >= 1) & (place <= COHORT)].groupby("image")["similarity"].mean()


def check_score(score: str) -> str:
    if score not in NEW_WHALE_SCORES:
        raise InputError(f"match.new_whale_score: {score!r} is not one of {', '.join(NEW_WHALE_SCORES)}")
    return score


def threshold_offsets(topk: pd.DataFrame, images, score: str) -> np.ndarray:
    """Per image of `images`, what is subtracted from its similarities before they are compared
    with the new_whale threshold: 0 for `similarity`; its cohort mean for `lift`. A photo without a
    cohort (one identity listed) takes the median of the other photos' cohort means, so that it
    stays on the table's scale (0 when no photo has a cohort)."""
    if check_score(score) == SIMILARITY:
        return np.zeros(len(images))
    means = cohort_means(topk)
    fallback = float(means.median()) if len(means) else 0.0
    return means.reindex(pd.Index(images)).fillna(fallback).to_numpy(dtype=np.float64)
