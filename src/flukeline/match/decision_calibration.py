"""Decision scores from the ensemble's evidence: per photo (or encounter) the top identity's score
and its margin to the runner-up, mapped to P(top identity is right) and P(photo is a new
individual) by a monotone model fitted on the validation folds, and the operating points (the
lowest probability cut whose validation precision reaches a target).

The model (`MonotoneCalibrator`) has two steps. A logistic regression on (top score, margin) gives
one evidence direction; its coefficients are constrained to the sign the target must have (more
similarity and a larger margin never make a match less likely, nor a new individual more likely),
so a wrong-signed coefficient is dropped and the fit repeated without it. Isotonic regression of
the target on that one direction then gives the probabilities: monotone in the direction, hence in
both inputs. Isotonic alone is one-dimensional; logistic alone is rarely calibrated at the tails
where the operating points lie.

The ensemble's top-k tables list identities only for an `average` ensemble; a `vote` ensemble votes
for new_whale like an identity. new_whale rows are dropped here: the evidence is always about the
best identity, and P(new individual) is what replaces new_whale's rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE

FEATURES = ("top_score", "margin")


def photo_evidence(topk: pd.DataFrame, groups: pd.Series | None = None) -> pd.DataFrame:
    """One row per photo, or per group of photos (an encounter: same animal, same day) when
    `groups` (image -> group key) is given: unit (the image, or the group key), images (the photos
    it covers), top_id, top_score, margin (top score minus the runner-up's, 0 when there is none),
    and fold/truth of its first photo where the table has them. A group's identity scores are the
    mean over its photos, an identity missing from a photo's list counting at that photo's lowest
    listed score (the ensemble's own rule for a member that did not list it)."""
    table = topk[topk["id"] != NEW_WHALE]
    extra = [c for c in ("fold", "truth") if c in table]
    firsts = topk.drop_duplicates("image").set_index("image")
    images = topk["image"].drop_duplicates().to_numpy()
    unit_of = pd.Series(images, index=images, dtype=object)
    if groups is not None:
        group = groups.reindex(images)
        named = (group.notna() & (group.astype(str) != "")).to_numpy()
        # Prefixed: a group key never collides with an image name.
        unit_of[named] = ("encounter " + group[named].astype(str)).to_numpy()
    scored = table.assign(unit=unit_of.loc[table["image"]].to_numpy())
    photos = unit_of.groupby(unit_of, sort=False).apply(lambda s: list(s.index))
    sizes = photos.map(len)
    single = scored[scored["unit"].map(sizes) == 1][["unit", "id", "similarity"]]
    combined = [single]
    for unit, images in photos[sizes > 1].items():
        rows = scored[scored["unit"] == unit]
        floors = rows.groupby("image")["similarity"].min()
        wide = rows.pivot_table(index="id", columns="image", values="similarity", aggfunc="max")
        wide = wide.reindex(columns=[i for i in images if i in floors.index])
        wide = wide.fillna(floors)
        combined.append(pd.DataFrame({"unit": unit, "id": wide.index, "similarity": wide.mean(axis=1).to_numpy()}))
    scores = pd.concat(combined, ignore_index=True)
    ranked = scores.sort_values(["unit", "similarity", "id"], ascending=[True, False, True], kind="stable")
    best = ranked.groupby("unit", sort=False).head(2)
    best = best.assign(place=best.groupby("unit").cumcount())
    top = best[best["place"] == 0].set_index("unit")
    second = best[best["place"] == 1].set_index("unit")["similarity"]
    out = pd.DataFrame({"unit": photos.index, "images": photos.to_numpy()})
    out["top_id"] = top["id"].reindex(out["unit"]).fillna("").to_numpy()
    out["top_score"] = top["similarity"].reindex(out["unit"]).to_numpy(dtype=np.float64)
    out["margin"] = (out["top_score"] - second.reindex(out["unit"]).to_numpy(dtype=np.float64)).fillna(0.0)
    # A photo with no identity at all (only new_whale voted): the lowest evidence there is.
    out["top_score"] = out["top_score"].fillna(-1.0)
    for column in extra:
        out[column] = [firsts.at[images[0], column] for images in out["images"]]
    out["size"] = out["images"].map(len)
    return out


@dataclass
class MonotoneCalibrator:
    """P(target | top score, margin): isotonic on the direction w . (score, margin), w >= 0
    (`increasing`) or w <= 0 (a target that evidence makes less likely, as a new individual)."""

    weights: tuple[float, float]
    knots_x: list[float]
    knots_y: list[float]

    def direction(self, evidence: pd.DataFrame) -> np.ndarray:
        values = evidence[list(FEATURES)].to_numpy(dtype=np.float64)
        return values @ np.asarray(self.weights, dtype=np.float64)

    def predict(self, evidence: pd.DataFrame) -> np.ndarray:
        """Probabilities, flat beyond the fitted range (no extrapolation)."""
        return np.interp(self.direction(evidence), self.knots_x, self.knots_y)

    def to_json(self) -> dict:
        return {"weights": list(self.weights), "knots_x": self.knots_x, "knots_y": self.knots_y}

    @classmethod
    def from_json(cls, data: dict) -> MonotoneCalibrator:
        return cls(tuple(data["weights"]), list(data["knots_x"]), list(data["knots_y"]))


def signed_logistic_weights(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, sign: float) -> np.ndarray:
    """Logistic coefficients of the features, each of the sign `sign` (+1 or -1) or 0: a feature
    whose fitted coefficient has the wrong sign is dropped and the rest refitted. With one class
    only, or nothing left, the plain sum of the features in `sign`'s direction (any monotone
    direction calibrates a constant)."""
    from sklearn.linear_model import LogisticRegression

    keep = list(range(x.shape[1]))
    if len(np.unique(y)) < 2:
        return sign * np.ones(x.shape[1])
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    while keep:
        model = LogisticRegression(C=1.0, max_iter=1000)
        model.fit(x[:, keep] / scale[keep], y, sample_weight=sample_weight)
        coefficients = model.coef_[0] / scale[keep]
        wrong = [f for f, c in zip(keep, coefficients) if c * sign < 0]
        if not wrong:
            weights = np.zeros(x.shape[1])
            weights[keep] = coefficients
            if np.all(weights == 0):
                break
            return weights
        keep = [f for f in keep if f not in wrong]
    return sign * np.ones(x.shape[1])


def fit_calibrator(evidence: pd.DataFrame, target: np.ndarray, increasing: bool) -> MonotoneCalibrator:
    """The monotone model of `target` (0/1 per row of `evidence`), each row weighted by its photos
    (an encounter counts as many photos as it holds, as the precision does)."""
    from sklearn.isotonic import IsotonicRegression

    x = evidence[list(FEATURES)].to_numpy(dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    weight = evidence["size"].to_numpy(dtype=np.float64) if "size" in evidence else np.ones(len(y))
    sign = 1.0 if increasing else -1.0
    w = signed_logistic_weights(x, y, weight, sign)
    # Isotonic (increasing) on the direction oriented so that the probability rises along it.
    z = x @ w
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=increasing, out_of_bounds="clip")
    iso.fit(sign * z, y, sample_weight=weight)
    knots_x = (sign * iso.X_thresholds_).tolist()
    knots_y = iso.y_thresholds_.tolist()
    if not increasing:
        knots_x, knots_y = knots_x[::-1], knots_y[::-1]
    return MonotoneCalibrator((float(w[0]), float(w[1])), knots_x, knots_y)


def fold_keys(evidence: pd.DataFrame, n_splits: int, seed: int) -> tuple[np.ndarray, str]:
    """Cross-fitting split of the validation rows, and its description: the validation folds where
    there are several, else `n_splits` seeded random parts (the default config validates on one fold)."""
    folds = evidence["fold"].to_numpy() if "fold" in evidence else np.zeros(len(evidence))
    if len(np.unique(folds)) >= 2:
        return folds, f"{len(np.unique(folds))} validation folds"
    rng = np.random.default_rng(seed)
    return rng.permutation(
        np.arange(len(evidence)) % n_splits
    ), f"{n_splits} seeded random parts of the validation photos"


def out_of_fold(evidence: pd.DataFrame, target: np.ndarray, increasing: bool, keys: np.ndarray) -> np.ndarray:
    """Each validation row's probability from a model fitted without its part: the thresholds are
    chosen, and their precision measured, on probabilities the rows did not shape."""
    out = np.empty(len(evidence))
    for key in np.unique(keys):
        held = keys == key
        model = fit_calibrator(evidence[~held], np.asarray(target)[~held], increasing)
        out[held] = model.predict(evidence[held])
    return out


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float  # take rows with probability >= threshold; inf: none
    taken: int  # photos taken on validation
    precision: float | None  # their measured precision (None: none taken)


def choose_threshold(
    probability: np.ndarray,
    correct: np.ndarray,
    weight: np.ndarray,
    target: float,
    min_support: int,
    photos: np.ndarray | None = None,
) -> OperatingPoint:
    """The lowest cut (the most photos taken) at which the photos with probability >= cut are
    right at least `target` of the time, counting at least `min_support` photos; inf when no cut
    reaches it. Cuts sit at the distinct probabilities (ties are taken or left together).
    `weight` weighs the precision; `photos` (default: `weight`) are what min_support and the point's
    `taken` count, so that importance weights (match/new_share.py) move the precision, not the support."""
    order = np.argsort(-probability, kind="stable")
    p, c, w = (
        probability[order],
        np.asarray(correct, dtype=np.float64)[order],
        np.asarray(weight, dtype=np.float64)[order],
    )
    counted = np.cumsum(np.asarray(weight if photos is None else photos, dtype=np.float64)[order])
    taken = np.cumsum(w)
    right = np.cumsum(w * c)
    # The end of each run of equal probabilities: a cut there takes the whole run.
    ends = np.flatnonzero(np.r_[p[1:] != p[:-1], True])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = right[ends] / taken[ends]
    ok = (precision >= target - 1e-12) & (counted[ends] >= min_support)
    if not ok.any():
        return OperatingPoint(float("inf"), 0, None)
    last = ends[np.flatnonzero(ok)[-1]]
    return OperatingPoint(float(p[last]), int(round(counted[last])), float(right[last] / taken[last]))


def reliability_bins(probability: np.ndarray, outcome: np.ndarray, weight: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability, observed rate and photo count per probability bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        total = float(weight[inside].sum())
        if total == 0:
            continue
        rows.append(
            {
                "bin": b,
                "predicted": float(np.average(probability[inside], weights=weight[inside])),
                "observed": float(np.average(outcome[inside], weights=weight[inside])),
                "photos": int(round(total)),
            }
        )
    return pd.DataFrame(rows, columns=["bin", "predicted", "observed", "photos"])
