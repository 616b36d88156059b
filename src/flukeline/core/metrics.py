"""Kaggle Humpback Whale Identification metrics: MAP@5 with one true label per image, and friends.

A prediction for one image is a ranked sequence of identity labels, best first; a
whitespace-separated string (the Kaggle submission format, "w_1 new_whale w_2") is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice

import numpy as np

NEW_WHALE = "new_whale"

Prediction = Sequence[str] | str


def _ranked_labels(predicted: Prediction) -> Sequence[str]:
    # A bare string would otherwise be iterated character by character.
    return predicted.split() if isinstance(predicted, str) else predicted


def average_precision_at_k(truth: str, predicted: Prediction, k: int = 5) -> float:
    """1/rank of the first occurrence of `truth` among the first `k` predictions, else 0.

    With a single relevant label, Kaggle's AP@k reduces to this: repeats of the truth after the
    first hit add nothing, and every earlier position (duplicates included) counts towards the rank.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for rank, label in enumerate(islice(_ranked_labels(predicted), k), start=1):
        if label == truth:
            return 1.0 / rank
    return 0.0


def _check_aligned(truths: Sequence[str], predictions: Sequence[Prediction]) -> None:
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions")
    if len(truths) == 0:
        raise ValueError("cannot score an empty set of predictions")


def map_at_k(truths: Sequence[str], predictions: Sequence[Prediction], k: int = 5) -> float:
    """Mean of average_precision_at_k over images (Kaggle's MAP@k)."""
    _check_aligned(truths, predictions)
    scores = np.fromiter(
        (average_precision_at_k(t, p, k) for t, p in zip(truths, predictions)), dtype=np.float64, count=len(truths)
    )
    return float(scores.mean())


def _top_labels(predictions: Sequence[Prediction]) -> list[str | None]:
    return [next(iter(_ranked_labels(p)), None) for p in predictions]


def top1_accuracy(truths: Sequence[str], predictions: Sequence[Prediction]) -> float:
    """Share of images whose first-ranked label is the truth (an empty prediction is wrong)."""
    _check_aligned(truths, predictions)
    hits = sum(top == truth for top, truth in zip(_top_labels(predictions), truths))
    return hits / len(truths)


def new_whale_precision_recall(truths: Sequence[str], predictions: Sequence[Prediction]) -> tuple[float, float]:
    """Precision and recall of "predicted new_whale", meaning new_whale is ranked first.

    Undefined ratios (0/0: new_whale never predicted first, or never the truth) are NaN, not 0,
    so that "no evidence" is not reported as "always wrong"; `summarise` turns NaN into None.
    """
    _check_aligned(truths, predictions)
    predicted_new = np.array([top == NEW_WHALE for top in _top_labels(predictions)], dtype=bool)
    actually_new = np.array([truth == NEW_WHALE for truth in truths], dtype=bool)
    true_positives = int(np.sum(predicted_new & actually_new))
    precision = _ratio(true_positives, int(predicted_new.sum()))
    recall = _ratio(true_positives, int(actually_new.sum()))
    return precision, recall


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _f1(precision: float, recall: float) -> float:
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _json_safe(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarise(truths: Sequence[str], predictions: Sequence[Prediction], k: int = 5) -> dict[str, float | int | None]:
    """All metrics in one JSON-safe dict (undefined values are None, never NaN).

    Keys: map5 (MAP@k; k is 5 unless overridden), top1, known_top1 (top-1 accuracy on the images
    of known individuals only: how often a catalogued animal is found first; None without any),
    new_whale_precision, new_whale_recall, new_whale_f1, n (number of images), n_known.
    """
    precision, recall = new_whale_precision_recall(truths, predictions)
    known = [i for i, truth in enumerate(truths) if truth != NEW_WHALE]
    known_top1 = top1_accuracy([truths[i] for i in known], [predictions[i] for i in known]) if known else math.nan
    return {
        "map5": map_at_k(truths, predictions, k),
        "top1": top1_accuracy(truths, predictions),
        "known_top1": _json_safe(known_top1),
        "new_whale_precision": _json_safe(precision),
        "new_whale_recall": _json_safe(recall),
        "new_whale_f1": _json_safe(_f1(precision, recall)),
        "n": len(truths),
        "n_known": len(known),
    }
