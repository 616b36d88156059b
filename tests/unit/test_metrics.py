import json
import math

import numpy as np
import pytest

from flukeline.core.metrics import (
    NEW_WHALE,
    average_precision_at_k,
    map_at_k,
    new_whale_precision_recall,
    summarise,
    top1_accuracy,
)


@pytest.mark.parametrize("predicted", [["A", "B", "C", "D", "E"], ["A", "A", "A", "A", "A"], ["A", "B", "A", "C", "A"]])
def test_seed_examples_score_one(predicted):
    # Seed 000: for truth A all three predictions have average precision 1.0.
    assert average_precision_at_k("A", predicted) == 1.0


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        (["B", "A", "C", "D", "E"], 1 / 2),
        (["B", "C", "A", "D", "E"], 1 / 3),
        (["B", "C", "D", "A", "E"], 1 / 4),
        (["B", "C", "D", "E", "A"], 1 / 5),
        (["B", "C", "D", "E", "F"], 0.0),
        (["B", "C", "D", "E", "F", "A"], 0.0),  # beyond the cut-off
        (["B", "A"], 1 / 2),  # fewer than five predictions
        ([], 0.0),
        (["B", "A", "A", "A", "A"], 1 / 2),  # later repeats add nothing
        (["B", "B", "A"], 1 / 3),  # rank counts positions, duplicates included
    ],
)
def test_partial_credit(predicted, expected):
    assert average_precision_at_k("A", predicted) == pytest.approx(expected)


def test_k_cuts_the_list():
    assert average_precision_at_k("A", ["B", "C", "A"], k=2) == 0.0
    assert average_precision_at_k("A", ["B", "A"], k=2) == 0.5
    with pytest.raises(ValueError):
        average_precision_at_k("A", ["A"], k=0)


def test_submission_string_is_split_on_whitespace():
    assert average_precision_at_k("w_2", "w_1 w_2 new_whale") == 0.5
    # A string must not be read character by character ("w" would never match "w_1" anyway,
    # but a one-letter label would).
    assert average_precision_at_k("A", "BA") == 0.0


def test_map_over_rows():
    truths = ["A", "B", "C", "D"]
    predictions = [["A", "X"], ["X", "B"], ["X", "Y", "Z", "W", "V"], ["X", "X", "D"]]
    assert map_at_k(truths, predictions) == pytest.approx((1 + 1 / 2 + 0 + 1 / 3) / 4)


def test_map_accepts_a_2d_array():
    truths = np.array(["A", "B"])
    predictions = np.array([["A", "B", "C", "D", "E"], ["A", "C", "D", "E", "B"]])
    assert map_at_k(truths, predictions) == pytest.approx((1 + 1 / 5) / 2)


def test_map_rejects_empty_and_misaligned_input():
    with pytest.raises(ValueError, match="empty"):
        map_at_k([], [])
    with pytest.raises(ValueError, match="2 truths but 1 predictions"):
        map_at_k(["A", "B"], [["A"]])


def test_map_on_many_rows_is_quick_and_exact():
    rng = np.random.default_rng(0)
    n = 100_000
    ranks = rng.integers(0, 7, size=n)  # 5 and 6 mean "absent"
    truths = [f"w_{i}" for i in range(n)]
    predictions = [
        [truth if position == rank else "other" for position in range(5)] for truth, rank in zip(truths, ranks)
    ]
    expected = np.where(ranks < 5, 1.0 / (ranks + 1), 0.0).mean()
    assert map_at_k(truths, predictions) == pytest.approx(expected)


def test_top1_accuracy():
    truths = ["A", "B", "C", NEW_WHALE]
    predictions = [["A", "B"], ["A", "B"], [], [NEW_WHALE, "A"]]
    assert top1_accuracy(truths, predictions) == 0.5


def test_new_whale_precision_recall_hand_case():
    truths = [NEW_WHALE, NEW_WHALE, NEW_WHALE, "A", "B"]
    predictions = [
        [NEW_WHALE, "A"],  # true positive
        [NEW_WHALE],  # true positive
        ["A", NEW_WHALE],  # false negative: new_whale is not ranked first
        [NEW_WHALE, "A"],  # false positive
        ["B", NEW_WHALE],  # true negative
    ]
    precision, recall = new_whale_precision_recall(truths, predictions)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)


def test_new_whale_undefined_ratios_are_nan():
    precision, recall = new_whale_precision_recall(["A", "B"], [["A"], ["B"]])
    assert math.isnan(precision) and math.isnan(recall)


def test_summarise_is_json_safe():
    truths = ["A", "B", NEW_WHALE, NEW_WHALE]
    predictions = [["A", NEW_WHALE], [NEW_WHALE, "B"], [NEW_WHALE], ["A", NEW_WHALE]]
    summary = summarise(truths, predictions)
    assert summary == {
        "map5": pytest.approx((1 + 1 / 2 + 1 + 1 / 2) / 4),
        "top1": 0.5,
        # Of the two known individuals, A is found first and B is not.
        "known_top1": 0.5,
        "new_whale_precision": 0.5,
        "new_whale_recall": 0.5,
        "new_whale_f1": 0.5,
        "n": 4,
        "n_known": 2,
    }
    json.dumps(summary, allow_nan=False)


def test_summarise_maps_undefined_to_none():
    assert summarise([NEW_WHALE], [[NEW_WHALE]])["known_top1"] is None  # no known individual to find
    summary = summarise(["A"], [["A"]])
    assert summary["new_whale_precision"] is None
    assert summary["new_whale_recall"] is None
    assert summary["new_whale_f1"] is None
    json.dumps(summary, allow_nan=False)


def test_f1_is_zero_when_new_whale_is_always_wrong():
    # Predicted first once (wrongly) and true once (missed): precision = recall = 0.
    summary = summarise([NEW_WHALE, "A"], [["A"], [NEW_WHALE]])
    assert summary["new_whale_precision"] == 0.0
    assert summary["new_whale_recall"] == 0.0
    assert summary["new_whale_f1"] == 0.0
