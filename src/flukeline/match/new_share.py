"""The share of new individuals among the photos being matched (`match.new_share`), and the
importance weights that move the validation photos to it.

Validation calibrates everything (the new_whale threshold, the decision cuts) on photos whose new
share comes from train.csv's new_whale rows; a new season can bring many more or fewer new animals.
The photos being matched carry their own share in their scores: with P(new | evidence) calibrated
on validation (decision_calibration's monotone model), the share that makes the posteriors
consistent with their own mean is the EM re-estimate of the class prior of Saerens, Latinne &
Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori probabilities"). It
assumes label shift: what a new (or a known) photo's evidence looks like is the same on validation
and test, only the mix differs. A bootstrap over both the validation photos (the calibration refitted)
and the photos being matched gives its interval.

`match.new_share`: auto (the estimate), validation (the validation share: the behaviour before
the estimate existed) or a number (a share the user knows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.decision_calibration import fit_calibrator, photo_evidence

AUTO, VALIDATION = "auto", "validation"
# Isotonic calibration is exactly 0 or 1 where validation held one class only; such a posterior is
# immune to any prior (0 x anything stays 0) and would pin EM. Clipping keeps every photo movable.
POSTERIOR_CLIP = 1e-3
BOOTSTRAP_REPLICATES = 200
INTERVAL_LEVEL = 0.9


def adjust_to_prior(p_new: np.ndarray, from_share: float, to_share: float) -> np.ndarray:
    """Posteriors P(new | x) calibrated where the new share was `from_share`, re-expressed for a
    share of `to_share` (Bayes: the likelihood ratio is unchanged, the prior odds are replaced)."""
    p = np.clip(np.asarray(p_new, dtype=np.float64), POSTERIOR_CLIP, 1 - POSTERIOR_CLIP)
    if not 0 < from_share < 1:
        return p
    new = p * (to_share / from_share)
    known = (1 - p) * ((1 - to_share) / (1 - from_share))
    return new / (new + known)


def em_new_share(p_new: np.ndarray, validation_share: float, tol: float = 1e-7, max_iter: int = 1000) -> float:
    """Saerens-Latinne-Decaestecker EM: the prior whose prior-adjusted posteriors average to itself.
    NaN without photos; the validation share itself when validation had one class only (the
    posteriors then carry no evidence about the other)."""
    p = np.asarray(p_new, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    if not 0 < validation_share < 1:
        return float(validation_share)
    share = float(validation_share)
    for _ in range(max_iter):
        updated = float(adjust_to_prior(p, validation_share, share).mean())
        if abs(updated - share) < tol:
            return updated
        share = updated
    return share


@dataclass(frozen=True)
class NewShareEstimate:
    estimate: float  # EM's share of new individuals among the photos being matched
    low: float  # bootstrap interval at `level`
    high: float
    validation_share: float  # the share on the validation photos (per photo)
    photos: int  # photos the estimate is made on
    method: str
    level: float = INTERVAL_LEVEL

    def to_json(self) -> dict:
        return asdict(self)


def estimate_new_share(
    val_topk: pd.DataFrame,
    test_topk: pd.DataFrame,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> NewShareEstimate:
    """EM's share of new individuals among `test_topk`'s photos, with P(new) calibrated on
    `val_topk` (its truth column), and a percentile bootstrap interval: each replicate resamples
    the validation photos (and refits the calibration, whose noise a small validation dominates)
    and the photos being matched."""
    if "truth" not in val_topk:
        raise InputError("validation top-k table: no truth column to calibrate P(new individual) on")
    # Per photo, no encounter grouping: the share is one of photos, as MAP@5 counts them.
    val, test = photo_evidence(val_topk), photo_evidence(test_topk)
    is_new = (val["truth"].astype(str) == NEW_WHALE).to_numpy()
    validation_share = float(is_new.mean()) if len(is_new) else float("nan")
    method = (
        f"EM re-estimation of the class prior (Saerens et al. 2002) on P(new individual) calibrated on the"
        f" validation photos; {level:.0%} percentile bootstrap over validation and test photos ({replicates})"
    )
    if not 0 < validation_share < 1 or test.empty:
        # One class only on validation, or nothing to match: nothing to re-estimate from.
        same = validation_share
        return NewShareEstimate(same, same, same, same, len(test), method, level)
    estimate = em_new_share(_p_new(val, is_new, test), validation_share)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(replicates)):
        v = rng.integers(0, len(val), len(val))
        t = rng.integers(0, len(test), len(test))
        share = float(is_new[v].mean())
        if not 0 < share < 1:
            continue
        draws.append(em_new_share(_p_new(val.iloc[v], is_new[v], test.iloc[t]), share))
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail]) if draws else (estimate, estimate)
    return NewShareEstimate(float(estimate), float(low), float(high), validation_share, len(test), method, level)


def _p_new(val: pd.DataFrame, is_new: np.ndarray, test: pd.DataFrame) -> np.ndarray:
    return fit_calibrator(val, is_new.astype(np.float64), increasing=False).predict(test)


def target_share(setting, estimate: NewShareEstimate | None, validation_share: float) -> float:
    """The share the threshold and cuts are chosen for: match.new_share's value."""
    if setting == VALIDATION:
        return float(validation_share)
    if setting == AUTO:
        if estimate is None:
            raise ValueError("match.new_share auto needs the estimate")
        return float(estimate.estimate)
    try:
        share = float(setting)
    except (TypeError, ValueError):
        raise InputError(f"match.new_share: {setting!r} is not auto, validation or a number from 0 to 1") from None
    if not 0 <= share <= 1:
        raise InputError(f"match.new_share: {share} is not a share from 0 to 1")
    return share


def class_weights(is_new: np.ndarray, validation_share: float, share: float) -> np.ndarray:
    """Importance weights that give the validation photos the new share `share`: a new photo counts
    share / validation_share, a known one (1 - share) / (1 - validation_share). A weighted mean
    over validation is then the expectation over photos with the target share, under label shift.
    All ones when validation has one class only (no reweighting can create the other)."""
    is_new = np.asarray(is_new, dtype=bool)
    if not 0 < validation_share < 1:
        return np.ones(len(is_new))
    return np.where(is_new, share / validation_share, (1 - share) / (1 - validation_share))


def adjust_decision_probabilities(
    p_correct: np.ndarray, p_new: np.ndarray, from_share: float, to_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """P(top identity is right) and P(new) calibrated at the validation share, moved to `to_share`.
    P(right) = P(known) x P(right | known), and label shift leaves P(right | known, evidence) alone:
    the known part is rescaled by the new P(known) over the old (the two models are fitted apart,
    so their ratio is capped at 1)."""
    adjusted_new = adjust_to_prior(p_new, from_share, to_share)
    old_known = 1 - np.clip(np.asarray(p_new, dtype=np.float64), POSTERIOR_CLIP, 1 - POSTERIOR_CLIP)
    right_if_known = np.minimum(np.asarray(p_correct, dtype=np.float64) / old_known, 1.0)
    return right_if_known * (1 - adjusted_new), adjusted_new
