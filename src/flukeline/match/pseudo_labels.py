"""Pseudo-labels for the next round (`match.pseudo_labels`): test images whose ensemble top-1
identity is above the new_whale threshold, at least `min_margin` ahead of the runner-up and at or
above a similarity cut, each with the reason it was taken (results/match/round<r>/
pseudo_labels.parquet: image, id, similarity, margin, round, reason).

The cut is fixed, or calibrated (`min_similarity: auto`): the lowest similarity at which the
validation folds' would-be pseudo-labels are right `min_precision` of the time on at least 10
images, the validation images weighted to the test photos' new share where match.new_share moves
it (match/new_share.py), so that a season with many new animals does not take them as known ones.
Selection and calibration share one eligibility rule.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE
from flukeline.match.cohort import SIMILARITY, threshold_offsets
from flukeline.match.new_share import class_weights
from flukeline.match.tables import to_wide

log = logging.getLogger(__name__)


def select_pseudo_labels(
    test_topk: pd.DataFrame,
    threshold: float,
    min_similarity: float,
    min_margin: float,
    round_: int,
    score: str = SIMILARITY,
) -> pd.DataFrame:
    """Test images whose best identity is confident enough to train the next round's members:
    above the new_whale threshold (compared with `score`, match/cohort.py), top-1 similarity >=
    min_similarity and ahead of the runner-up by >= min_margin. The table says why each image was taken."""
    images, top_ids, top_sims, top_scores, margin, eligible = pseudo_label_candidates(
        test_topk, threshold, min_margin, score
    )
    # With the similarity itself compared with the threshold, the threshold is a similarity floor too.
    floor = max(float(min_similarity), float(threshold)) if score == SIMILARITY else float(min_similarity)
    taken = eligible & (top_sims >= floor)
    return pd.DataFrame(
        {
            "image": images[taken],
            "id": top_ids[taken].astype(str),
            "similarity": top_sims[taken],
            "margin": margin[taken],
            "round": int(round_),
            "reason": [
                f"top-1 similarity {s:.3f} >= {floor:.3f}"
                + ("" if score == SIMILARITY else f", lift {lift:.3f} >= {float(threshold):.3f}")
                + f" and margin {m:.3f} >= {min_margin:.3f}"
                for s, lift, m in zip(top_sims[taken], top_scores[taken], margin[taken])
            ],
        }
    )


def pseudo_label_candidates(topk: pd.DataFrame, threshold: float, min_margin: float, score: str = SIMILARITY):
    """Per query: image, top-1 id and similarity, the top-1's score compared with the threshold
    (its similarity, or its lift for `score` lift), margin over the runner-up, and whether it could
    be a pseudo-label at all (an identity above the new_whale threshold, compared with `score`,
    `min_margin` ahead). The selection and its calibration share this rule, so the cut is
    calibrated on the same kind of images it takes."""
    images, ids, sims = to_wide(topk, 2)
    second = np.where(np.isfinite(sims[:, 1]), sims[:, 1], -1.0)
    margin = sims[:, 0] - second
    top_scores = sims[:, 0] - threshold_offsets(topk, images, score)
    eligible = (top_scores >= float(threshold)) & (margin >= float(min_margin)) & (ids[:, 0] != "")
    return images, ids[:, 0], sims[:, 0], top_scores, margin, eligible


# A precision measured on fewer validation images than this is noise, not a calibration.
PSEUDO_LABEL_MIN_SUPPORT = 10


def calibrate_pseudo_label_similarity(
    val_topk: pd.DataFrame,
    threshold: float,
    min_precision: float,
    min_margin: float,
    min_support: int = PSEUDO_LABEL_MIN_SUPPORT,
    share: float | None = None,
    score: str = SIMILARITY,
) -> tuple[float, pd.DataFrame]:
    """The lowest top-1 similarity at which the validation folds' would-be pseudo-labels (top-1
    identity above the new_whale threshold, `min_margin` ahead of the runner-up) are right at least
    `min_precision` of the time, counted on at least `min_support` images; a new_whale image that
    would be taken counts as wrong. With `share`, the precision is that of validation images
    importance-weighted to that new share (min_support still counts images). Returns (similarity,
    or inf when no cut qualifies, and the curve: similarity, taken, precision at every cut), so the
    rule can say why nothing was taken."""
    if "truth" not in val_topk:
        raise ValueError("pseudo-label calibration needs the validation truth ('truth' column of the top-k table)")
    images, top_ids, top_sims, _, _, eligible = pseudo_label_candidates(val_topk, threshold, min_margin, score)
    truth = val_topk.drop_duplicates("image").set_index("image")["truth"].loc[images].to_numpy()
    is_new = truth == NEW_WHALE
    weight = np.ones(len(truth)) if share is None else class_weights(is_new, float(is_new.mean()), share)
    top = top_sims[eligible]
    right = top_ids[eligible] == truth[eligible]
    order = np.argsort(-top, kind="stable")
    top, right, weight = top[order], right[order], weight[eligible][order]
    taken = np.arange(1, len(top) + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.cumsum(weight * right) / np.cumsum(weight)
    # A cut can only fall between different similarities: ties are taken together.
    cut = np.r_[top[1:] != top[:-1], True] if len(top) else np.zeros(0, dtype=bool)
    curve = pd.DataFrame({"similarity": top[cut], "taken": taken[cut], "precision": precision[cut]})
    good = curve[(curve["taken"] >= int(min_support)) & (curve["precision"] >= float(min_precision))]
    return (float(good["similarity"].min()) if len(good) else float("inf")), curve


def calibrated_pseudo_label_cut(
    val_topk: pd.DataFrame,
    threshold: float,
    min_precision: float,
    min_margin: float,
    share: float | None = None,
    score: str = SIMILARITY,
) -> tuple[float, dict]:
    """match.pseudo_labels.min_similarity: auto -- the cut the validation folds support (at the
    new `share`, if given), and what it took there (inf and a logged reason when no cut reaches
    the precision)."""
    similarity, curve = calibrate_pseudo_label_similarity(
        val_topk, threshold, min_precision, min_margin, share=share, score=score
    )
    at = curve[curve["similarity"] >= similarity]
    found = bool(np.isfinite(similarity))
    report = {
        "min_precision": min_precision,
        "min_support": PSEUDO_LABEL_MIN_SUPPORT,
        "validation_images": int(val_topk["image"].nunique()),
        "validation_taken": int(at["taken"].max()) if found else 0,
        "validation_precision": float(at["precision"].iloc[-1]) if found else None,
        "new_share": share,
    }
    if found:
        log.info(
            "pseudo-labels: similarity >= %.3f takes %d validation images at precision %.3f (>= %.2f asked)",
            similarity,
            report["validation_taken"],
            report["validation_precision"],
            min_precision,
        )
    else:
        best = curve[curve["taken"] >= PSEUDO_LABEL_MIN_SUPPORT]["precision"].max() if len(curve) else float("nan")
        log.warning(
            "pseudo-labels: no similarity cut reaches precision %.2f on >= %d validation images (best %.3f); "
            "none taken",
            min_precision,
            PSEUDO_LABEL_MIN_SUPPORT,
            best,
        )
    return similarity, report
