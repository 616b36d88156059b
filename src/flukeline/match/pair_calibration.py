"""Pair scores of the local matcher (RANSAC inliers) calibrated to the probability that the two
photos show the same individual, on the validation folds' pairs (WildFusion's recipe):
scikit-learn's IsotonicRegression, monotone, then made strictly increasing by a tiny slope so that
two pairs with different inlier counts never tie (isotonic regression is flat over long runs, and
a flat top would make 40 and 400 inliers indistinguishable in the ranking). The fitted curve is
kept as its breakpoints (summary.json), and drawn for the report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flukeline.core.figures import new_figure, save_figure

# Weight of the strictly increasing tie-breaker: probabilities move by at most this much.
TIE_BREAK = 1e-3


@dataclass
class PairCalibration:
    """Monotone map from a pair score (inliers) to P(same individual): isotonic breakpoints
    (x ascending, y non-decreasing), linearly interpolated and clipped at the ends, plus the
    tie-breaker score / (score + scale)."""

    x: np.ndarray
    y: np.ndarray
    scale: float
    positives: int
    negatives: int

    def __call__(self, scores) -> np.ndarray:
        s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
        base = np.interp(s, self.x, self.y) if len(self.x) else np.zeros_like(s)
        return (1.0 - TIE_BREAK) * base + TIE_BREAK * s / (s + self.scale)

    @classmethod
    def from_dict(cls, values: dict) -> PairCalibration:
        """The calibration to_dict wrote (a local member's summary.json, a gallery's manifest)."""
        return cls(
            np.asarray(values["x"], np.float64),
            np.asarray(values["y"], np.float64),
            float(values["scale"]),
            int(values.get("positives", 0)),
            int(values.get("negatives", 0)),
        )

    def to_dict(self) -> dict:
        return {
            "method": "isotonic regression on validation pairs (+ strictly increasing tie-break)",
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
            "scale": self.scale,
            "positives": self.positives,
            "negatives": self.negatives,
        }


def fit_pair_calibration(scores, same) -> PairCalibration:
    """Isotonic P(same | score) on labelled pairs. With one class only (a tiny validation fold)
    the curve is that class's constant share: the member then ranks by the tie-breaker alone and
    adds no information to the fused score, which the fitted weights see."""
    from sklearn.isotonic import IsotonicRegression

    scores = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    same = np.asarray(same, dtype=bool)
    scale = float(max(np.median(scores[scores > 0]), 1.0)) if (scores > 0).any() else 1.0
    positives, negatives = int(same.sum()), int((~same).sum())
    if len(scores) == 0:
        return PairCalibration(np.zeros(0), np.zeros(0), scale, 0, 0)
    if positives == 0 or negatives == 0:
        share = float(same.mean())
        return PairCalibration(np.array([0.0]), np.array([share]), scale, positives, negatives)
    iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, same)
    x, y = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
    return PairCalibration(x, y, scale, positives, negatives)


def plot_pair_calibration(
    calibration: PairCalibration, scores, same, path, title: str, label: str = "RANSAC inliers"
) -> None:
    """The calibrated curve over the scores (`label`: inliers, or the LNBNN-weighted evidence), the
    observed same-individual share in bins, and the two classes' histograms (how far apart the
    matcher puts them)."""
    scores = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    same = np.asarray(same, dtype=bool)
    fig, (left, right) = new_figure(1, 2, figsize=(10, 3.6))
    top = float(np.percentile(scores, 99.5)) if len(scores) else 1.0
    grid = np.linspace(0, max(top, 1.0), 200)
    left.plot(grid, calibration(grid), label="isotonic P(same)")
    if len(scores):
        edges = np.unique(np.quantile(scores, np.linspace(0, 1, 16)))
        if len(edges) > 1:
            which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
            centres = [scores[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
            shares = [same[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
            left.plot(centres, shares, "o", markersize=3, label="observed share (quantile bins)")
    left.set_xlabel(label)
    left.set_ylabel("P(same individual)")
    left.set_ylim(0, 1)
    left.legend(loc="upper left")
    left.set_title(f"{title}: {calibration.positives} same / {calibration.negatives} other pairs")
    bins = np.linspace(0, max(top, 1.0), 40)
    right.hist(scores[~same], bins=bins, alpha=0.6, density=True, label="other individual")
    right.hist(scores[same], bins=bins, alpha=0.6, density=True, label="same individual")
    right.set_xlabel(label)
    right.set_yscale("log")
    right.legend(loc="upper right")
    right.set_title("validation")
    fig.tight_layout()
    save_figure(fig, path)
