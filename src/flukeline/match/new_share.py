"""The share of new individuals among the photos being matched (`match.new_share`), and the
importance weights that move the validation photos to it.

Validation calibrates everything (the new_whale threshold, the decision cuts) on photos whose new
share comes from train.csv's new_whale rows; a new season can bring many more or fewer new animals.
The photos being matched carry their own share in their scores: with P(new | evidence) fitted on
validation, the share that makes the posteriors consistent with their own mean is the EM
re-estimate of the class prior of Saerens, Latinne & Decaestecker (2002, "Adjusting the outputs of
a classifier to new a priori probabilities"). It assumes label shift: what a new (or a known)
photo's evidence looks like is the same on validation and test, only the mix differs. A bootstrap
over both the validation photos (the model refitted) and the photos being matched gives its interval.

Two choices make that assumption hold better (bench/bench_new_share_estimate.py, issue 30):
- The evidence is the top identity's *lift* over the photo's own cohort (its score minus the mean
  of the next identities' scores, the cohort-mean score normalisation of speaker verification) and
  the margin, not the raw top score. A validation photo is matched against the other folds only,
  a test photo against the whole catalogue: with more photos per identity every identity's best
  score rises, a new animal's top score with it (Omniglot: test new photos looked a quarter of the
  way to known ones), and EM read the shift as fewer new photos. The lift moves with the cohort.
- P(new | evidence) is a logistic model (the signed direction of decision_calibration, then Platt
  scaling), not the decisions' isotonic one: with the few new photos validation holds (17 on
  Omniglot) isotonic regression fits them in steps that separate the classes more than they are
  separated, and EM, trusting that, moved the share too little.

`match.new_share`: auto (the estimate), validation (the validation share: the behaviour before
the estimate existed) or a number (a share the user knows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.cohort import cohort_means
from flukeline.match.decision_calibration import photo_evidence, signed_logistic_weights

AUTO, VALIDATION = "auto", "validation"
# A posterior of exactly 0 or 1 (the decisions' isotonic model, where validation held one class
# only) is immune to any prior (0 x anything stays 0) and would pin EM. Clipping keeps every photo movable.
POSTERIOR_CLIP = 1e-3
BOOTSTRAP_REPLICATES = 200
INTERVAL_LEVEL = 0.9
SHARE_FEATURES = ("lift", "margin")


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


def share_evidence(topk: pd.DataFrame) -> pd.DataFrame:
    """photo_evidence per photo (no encounter grouping: the share is one of photos, as MAP@5 counts
    them) with `lift`: the top identity's score minus its cohort's mean (match/cohort.py; 0 when it
    lists one identity or none: no cohort, the least evidence)."""
    evidence = photo_evidence(topk)
    top = evidence.set_index("unit")["top_score"]
    lift = top - cohort_means(topk).reindex(top.index)
    return evidence.assign(lift=lift.fillna(0.0).to_numpy(dtype=np.float64))


@dataclass(frozen=True)
class NewModel:
    """P(new individual | lift, margin): logistic on the direction w . (lift, margin), w <= 0
    (more lift or margin never makes a new individual more likely)."""

    weights: tuple[float, float]
    slope: float
    intercept: float

    def predict(self, evidence: pd.DataFrame) -> np.ndarray:
        z = evidence[list(SHARE_FEATURES)].to_numpy(dtype=np.float64) @ np.asarray(self.weights)
        return 1.0 / (1.0 + np.exp(-(self.slope * z + self.intercept)))


def fit_new_model(evidence: pd.DataFrame, is_new: np.ndarray) -> NewModel:
    """The signed logistic direction of (lift, margin) (decision_calibration's, its coefficients
    <= 0), then Platt scaling of P(new) on it; each photo weighted by its `size`. Both classes needed."""
    from sklearn.linear_model import LogisticRegression

    x = evidence[list(SHARE_FEATURES)].to_numpy(dtype=np.float64)
    y = np.asarray(is_new, dtype=np.float64)
    weight = evidence["size"].to_numpy(dtype=np.float64) if "size" in evidence else np.ones(len(y))
    w = signed_logistic_weights(x, y, weight, -1.0)
    platt = LogisticRegression(C=1.0, max_iter=1000).fit((x @ w)[:, None], y, sample_weight=weight)
    return NewModel((float(w[0]), float(w[1])), float(platt.coef_[0, 0]), float(platt.intercept_[0]))


def estimate_new_share(
    val_topk: pd.DataFrame,
    test_topk: pd.DataFrame,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> NewShareEstimate:
    """EM's share of new individuals among `test_topk`'s photos, with P(new) fitted on `val_topk`
    (its truth column), and a percentile bootstrap interval: each replicate resamples the validation
    photos (and refits the model, whose noise a small validation dominates) and the photos being matched."""
    if "truth" not in val_topk:
        raise InputError("validation top-k table: no truth column to calibrate P(new individual) on")
    val, test = share_evidence(val_topk), share_evidence(test_topk)
    is_new = (val["truth"].astype(str) == NEW_WHALE).to_numpy()
    method = (
        f"EM re-estimation of the class prior (Saerens et al. 2002) on P(new individual) fitted on the"
        f" validation photos (logistic on the top identity's lift over its cohort and the margin);"
        f" {level:.0%} percentile bootstrap over validation and test photos ({replicates})"
    )
    return bootstrap_share(val, is_new, test, fit_new_model, method, replicates, level, seed)


def bootstrap_share(
    val: pd.DataFrame,
    is_new: np.ndarray,
    test: pd.DataFrame,
    fit,
    method: str,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = INTERVAL_LEVEL,
    seed: int = 0,
) -> NewShareEstimate:
    """EM's share among the `test` evidence rows with the posterior model `fit(val, is_new)` (an
    object with predict(evidence)), and its percentile bootstrap interval over both tables."""
    is_new = np.asarray(is_new, dtype=bool)
    validation_share = float(is_new.mean()) if len(is_new) else float("nan")
    if not 0 < validation_share < 1 or test.empty:
        # One class only on validation, or nothing to match: nothing to re-estimate from.
        same = validation_share
        return NewShareEstimate(same, same, same, same, len(test), method, level)
    estimate = em_new_share(fit(val, is_new).predict(test), validation_share)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(replicates)):
        v = rng.integers(0, len(val), len(val))
        t = rng.integers(0, len(test), len(test))
        share = float(is_new[v].mean())
        if not 0 < share < 1:
            continue
        draws.append(em_new_share(fit(val.iloc[v], is_new[v]).predict(test.iloc[t]), share))
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail]) if draws else (estimate, estimate)
    return NewShareEstimate(float(estimate), float(low), float(high), validation_share, len(test), method, level)


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
