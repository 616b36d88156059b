"""Open-set scores (flukeline.evaluate.open_set) on hand-computed examples, and where they reach
metrics.json (evaluate.scores: per method, and the estimated against the true new share) and
metrics.html."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.evaluate.metrics_table import metrics_html
from flukeline.evaluate.open_set import open_set_scores
from flukeline.evaluate.scores import evaluate, new_share_entry

# Known a (2 photos, 1 found), known b (1 photo, found), three new photos (2 called new).
TRUTH = ["a", "a", "b", "new_whale", "new_whale", "new_whale"]
LISTS = [["a", "new_whale"], ["b", "a"], ["b"], ["new_whale", "a"], ["c", "new_whale"], ["new_whale"]]
NEW_SCORES = [0.1, 0.5, 0.2, 0.9, 0.4, 0.8]


def test_open_set_scores_by_hand():
    scores = open_set_scores(TRUTH, LISTS, NEW_SCORES)
    # BAKS: a 1/2, b 1/1 -> 0.75 (plain known top-1 would be 2/3). BAUS: 2 of 3 new photos.
    assert scores["baks"] == pytest.approx(0.75)
    assert scores["baus"] == pytest.approx(2 / 3)
    # New scores 0.9, 0.4, 0.8 against known 0.1, 0.5, 0.2: 3 + 2 + 3 of 9 pairs ordered right.
    assert scores["auroc_new"] == pytest.approx(8 / 9)
    assert scores["new_share_true"] == 0.5 and scores["new_share_predicted"] == pytest.approx(2 / 6)


def test_open_set_scores_edge_cases():
    # A photo without candidates (best similarity -inf: the most "new") keeps its rank.
    scores = open_set_scores(TRUTH, LISTS, [0.1, 0.5, 0.2, np.inf, 0.4, 0.8])
    assert scores["auroc_new"] == pytest.approx(8 / 9)
    # No scores, or all NaN (a vote ensemble): no AUROC, the rest still there.
    for missing in (None, [np.nan] * 6):
        assert open_set_scores(TRUTH, LISTS, missing)["auroc_new"] is None
    # Known photos only: no BAUS and no AUROC; nothing at all: every score None.
    known = open_set_scores(TRUTH[:3], LISTS[:3], NEW_SCORES[:3])
    assert known["baus"] is None and known["auroc_new"] is None and known["baks"] == pytest.approx(0.75)
    empty = open_set_scores([], [], [])
    assert all(value is None for value in empty.values())


def _predictions(path, rows):
    table = pd.DataFrame(rows, columns=["image", "predicted", "best_similarity", "truth"]).assign(fold=0)
    table.to_parquet(path)
    return str(path)


def test_metrics_json_and_page_carry_the_open_set_scores_and_the_new_share(tmp_path):
    images = [f"i{k}.jpg" for k in range(6)]
    rows = [(i, " ".join(ids), -s, t) for i, ids, s, t in zip(images, LISTS, NEW_SCORES, TRUTH)]
    predictions = _predictions(tmp_path / "ensemble.parquet", rows)
    baseline = _predictions(tmp_path / "all_new.parquet", [(i, "new_whale", np.nan, t) for i, t in zip(images, TRUTH)])
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"Image": images, "Id": [" ".join(ids) for ids in LISTS]}).to_csv(submission, index=False)
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"Image": images, "Id": TRUTH}).to_csv(truth, index=False)
    summary = tmp_path / "summary.json"
    estimate = {"setting": "auto", "used": 0.45, "estimate": 0.45, "low": 0.3, "high": 0.6, "validation_share": 0.2}
    summary.write_text(json.dumps({"threshold": 0.3, "new_share": {**estimate, "level": 0.9}}))
    metrics = evaluate(
        baseline, [("ensemble@round0", predictions, predictions)], str(submission), str(truth),
        ensemble_summary_path=str(summary),
    )  # fmt: skip
    test = metrics["test"]["methods"]["ensemble@round0"]["open_set"]
    assert test["baks"] == pytest.approx(0.75) and test["auroc_new"] == pytest.approx(8 / 9)
    assert metrics["cv"]["methods"]["ensemble@round0"]["open_set"]["baus"] == pytest.approx(2 / 3)
    share = metrics["new_share"]
    assert (share["estimated"], share["true"], share["validation"]) == (0.45, 0.5, 0.2)
    assert share["error"] == pytest.approx(-0.05) and share["interval"] == [0.3, 0.6]
    page = metrics_html(metrics, {"ensemble@round0": {"threshold": 0.3}})
    section = page[page.index("New individuals (open set, test photos)") :]
    assert "estimated 0.450 (90% interval 0.300-0.600)" in section and "True share: 0.500" in section
    assert "BAKS" in section and "0.7500" in section and "0.8889" in section


def test_new_share_entry_without_an_estimate_or_a_truth():
    assert new_share_entry({"threshold": 0.4, "method": "vote"}, None) is None
    estimate = {"setting": "validation", "used": 0.2, "estimate": 0.3, "low": 0.2, "high": 0.4, "validation_share": 0.2}
    entry = new_share_entry({"new_share": estimate}, None)
    assert "true" not in entry and entry["used"] == 0.2 and entry["setting"] == "validation"
