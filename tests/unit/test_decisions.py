"""Decision scores and operating points (flukeline.match.decision_calibration, match.decisions) on
constructed evidence: the monotone calibration, the threshold reaching a precision target, the
encounter grouping, and the decide runner's table and summary; and the decisions scored against a
test truth (flukeline.evaluate.decision_scores)."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.evaluate.decision_scores import score_decisions
from flukeline.match.decision_calibration import (
    MonotoneCalibrator,
    choose_threshold,
    fit_calibrator,
    photo_evidence,
    reliability_bins,
)
from flukeline.match.decisions import classify, decide, run_decide
from flukeline.match.settings import DecisionSettings


def _evidence(n=600, seed=0):
    """Photos whose top identity is right more often with a higher top score and a larger margin."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.2, 1.0, n)
    margin = rng.uniform(0.0, 0.3, n)
    p = 1 / (1 + np.exp(-(12 * (top - 0.6) + 10 * margin)))
    right = rng.uniform(size=n) < p
    return pd.DataFrame({"top_score": top, "margin": margin, "size": 1}), right


def test_choose_threshold_takes_the_most_photos_whose_precision_reaches_the_target():
    p = np.array([0.99, 0.98, 0.9, 0.8, 0.7])
    right = np.array([1, 1, 1, 0, 1])
    w = np.ones(5)
    # Precision at the cuts: 1, 1, 1, 0.75, 0.8. At 0.95 the lowest cut reaching it is 0.9.
    point = choose_threshold(p, right, w, 0.95, 1)
    assert (point.threshold, point.taken, point.precision) == (0.9, 3, 1.0)
    # At 0.8 the last cut (all five photos, 4 right) reaches it, though the one before does not.
    point = choose_threshold(p, right, w, 0.8, 1)
    assert (point.threshold, point.taken, point.precision) == (0.7, 5, 0.8)
    # Too few photos at every cut that reaches it: none taken.
    point = choose_threshold(p, right, w, 0.95, 4)
    assert point.threshold == float("inf") and point.taken == 0 and point.precision is None


def test_choose_threshold_takes_tied_probabilities_together_and_counts_encounter_photos():
    p = np.array([0.9, 0.9, 0.9, 0.5])
    right = np.array([1, 1, 0, 1])
    # A cut inside the tie is not possible: 2/3 right at 0.9, so 0.9 precision never reaches 0.95.
    assert choose_threshold(p, right, np.ones(4), 0.95, 1).threshold == float("inf")
    # Weights are photos: an encounter of 3 right photos outweighs the wrong single photo.
    point = choose_threshold(np.array([0.9, 0.8]), np.array([1, 0]), np.array([3.0, 1.0]), 0.75, 1)
    assert (point.threshold, point.taken, point.precision) == (0.8, 4, 0.75)


def test_calibrator_is_monotone_in_both_inputs_and_calibrated_in_sample():
    evidence, right = _evidence()
    model = fit_calibrator(evidence, right.astype(float), increasing=True)
    assert model.weights[0] > 0 and model.weights[1] > 0
    grid = np.linspace(0.2, 1.0, 41)
    for margin in (0.0, 0.1, 0.3):
        values = model.predict(pd.DataFrame({"top_score": grid, "margin": margin}))
        assert np.all(np.diff(values) >= -1e-12)
    for top in (0.4, 0.7):
        values = model.predict(pd.DataFrame({"top_score": top, "margin": np.linspace(0, 0.3, 31)}))
        assert np.all(np.diff(values) >= -1e-12)
    predicted = model.predict(evidence)
    assert predicted.min() >= 0 and predicted.max() <= 1
    # Isotonic regression reproduces the observed rate on its own data, overall and per bin.
    assert predicted.mean() == pytest.approx(right.mean(), abs=1e-9)
    bins = reliability_bins(predicted, right.astype(float), np.ones(len(right)))
    assert np.abs(bins["predicted"] - bins["observed"]).max() < 0.1
    # It survives the JSON round trip of calibration.json.
    again = MonotoneCalibrator.from_json(json.loads(json.dumps(model.to_json())))
    assert np.array_equal(again.predict(evidence), predicted)


def test_calibrator_of_a_decreasing_target_falls_with_the_evidence_and_drops_a_wrong_signed_input():
    evidence, right = _evidence(seed=1)
    new = ~right  # a new individual: the less evidence, the likelier
    model = fit_calibrator(evidence, new.astype(float), increasing=False)
    values = model.predict(pd.DataFrame({"top_score": np.linspace(0.2, 1.0, 41), "margin": 0.1}))
    assert np.all(np.diff(values) <= 1e-12) and values[0] > values[-1]
    # A target that a larger margin makes *less* likely cannot get a negative margin weight: the
    # margin is dropped and the score alone carries the model.
    rng = np.random.default_rng(2)
    top, margin = rng.uniform(0, 1, 400), rng.uniform(0, 1, 400)
    target = (rng.uniform(size=400) < 1 / (1 + np.exp(-(8 * (top - 0.5) - 8 * (margin - 0.5))))).astype(float)
    model = fit_calibrator(pd.DataFrame({"top_score": top, "margin": margin, "size": 1}), target, increasing=True)
    assert model.weights[0] > 0 and model.weights[1] == 0


def test_a_single_class_gives_a_constant_probability():
    evidence, _ = _evidence(n=50)
    model = fit_calibrator(evidence, np.ones(50), increasing=True)
    assert np.allclose(model.predict(evidence), 1.0)


def _topk(rows):
    return pd.DataFrame(rows, columns=["image", "rank", "id", "similarity"])


def test_photo_evidence_combines_an_encounter_by_mean_score_with_the_photo_floor():
    topk = _topk(
        [
            ("a.jpg", 0, "w1", 0.9),
            ("a.jpg", 1, "w2", 0.5),
            ("b.jpg", 0, "w2", 0.7),
            ("b.jpg", 1, "w3", 0.4),
            ("c.jpg", 0, "w3", 0.6),
            ("c.jpg", 1, "new_whale", 0.55),  # a vote ensemble's new_whale row: no identity
            ("c.jpg", 2, "w1", 0.3),
        ]
    )
    alone = photo_evidence(topk).set_index("unit")
    assert alone.loc["c.jpg", "top_id"] == "w3" and alone.loc["c.jpg", "margin"] == pytest.approx(0.3)
    grouped = photo_evidence(topk, pd.Series({"a.jpg": "day1", "b.jpg": "day1"})).set_index("unit")
    assert len(grouped) == 2 and grouped.loc["encounter day1", "images"] == ["a.jpg", "b.jpg"]
    # w1: (0.9 + b's floor 0.4) / 2 = 0.65; w2: (0.5 + 0.7) / 2 = 0.6; w3: (a's floor 0.5 + 0.4) / 2.
    day = grouped.loc["encounter day1"]
    assert day["top_id"] == "w1" and day["size"] == 2
    assert day["top_score"] == pytest.approx(0.65) and day["margin"] == pytest.approx(0.05)


def test_classify_sends_contradictory_evidence_to_review():
    p_correct = np.array([0.99, 0.1, 0.5, 0.99])
    p_new = np.array([0.0, 0.97, 0.4, 0.97])
    assert classify(p_correct, p_new, 0.9, 0.95).tolist() == ["match", "new", "review", "review"]


def _run_tables(n_val=400, n_test=120, seed=0):
    """A validation top-k table whose right answers and new individuals follow the evidence, and a
    test table drawn the same way, with its truth."""
    rng = np.random.default_rng(seed)

    def draw(n, prefix):
        rows, truth = [], {}
        for i in range(n):
            image = f"{prefix}{i:03d}.jpg"
            top = rng.uniform(0.2, 1.0)
            margin = rng.uniform(0, 0.3)
            new = rng.uniform() < 1 / (1 + np.exp(25 * (top - 0.4)))
            right = not new and rng.uniform() < 1 / (1 + np.exp(-(14 * (top - 0.65) + 10 * margin)))
            rows += [(image, 0, f"w{i % 7}", top), (image, 1, f"w{(i + 1) % 7}", top - margin)]
            truth[image] = "new_whale" if new else (f"w{i % 7}" if right else f"w{(i + 3) % 7}")
        return _topk(rows), truth

    val, val_truth = draw(n_val, "v")
    val["fold"] = 0
    val["truth"] = val["image"].map(val_truth)
    test_topk, test_truth = draw(n_test, "t")
    train = pd.DataFrame({"image": ["g.jpg"], "id": ["w0"], "fold": [1]})
    test = pd.DataFrame({"image": test_topk["image"].drop_duplicates().to_numpy()})
    return val, test_topk, train, test, test_truth


def test_decide_reaches_the_precision_targets_on_validation_and_decides_every_test_photo():
    val, test_topk, train, test, truth = _run_tables()
    table, summary, calibration, _ = decide(val, test_topk, train, test, DecisionSettings(min_support=10))
    assert table["Image"].tolist() == test["image"].tolist()
    assert set(table["decision"]) <= {"match", "new", "review"}
    for name in ("match", "new"):
        point = summary["operating_points"][name]
        entry = summary["validation"]["classes"][name]
        assert point["threshold"] is not None, name  # the constructed evidence allows both
        assert entry["precision"] >= 0.95 and entry["photos"] >= 10, (name, entry)
        assert entry["photos"] == point["validation_photos"]
    shares = [summary["validation"]["classes"][c]["share"] for c in ("match", "new", "review")]
    assert sum(shares) == pytest.approx(1.0)
    # Auto-accepted rows name their id; the probabilities lie on the cuts' side they claim.
    match = table[table["decision"] == "match"]
    assert (match["Id"] == match["candidate"]).all() and (table.loc[table["decision"] != "match", "Id"] == "").all()
    cut = summary["operating_points"]["match"]["threshold"]
    assert (match["p_correct"] >= round(cut, 4) - 1e-4).all()
    assert (table.loc[table["p_correct"] < cut - 1e-4, "decision"] != "match").all()
    # The precision measured again here from the validation truth: the share of auto-accepted
    # photos whose top id is their truth (the runner's own figure must be that).
    assert summary["test"]["classes"]["match"]["photos"] == len(match)
    scores = score_decisions(table, pd.DataFrame({"Image": list(truth), "Id": list(truth.values())}))
    right = [truth[i] == d for i, d in zip(match["Image"], match["Id"])]
    assert scores["classes"]["match"]["precision"] == pytest.approx(np.mean(right))
    assert set(calibration["models"]) == {"p_correct", "p_new"}


def test_decide_decides_an_encounter_together(tmp_path):
    val, test_topk, train, test, _ = _run_tables(n_test=6)
    images = test["image"].tolist()
    test = test.assign(encounter=["e1", "e1", "e1", "", "e2", ""])
    table, summary, _, _ = decide(val, test_topk, train, test, DecisionSettings())
    day = table[table["encounter"] == "e1"]
    assert day["photos"].tolist() == [3, 3, 3]
    assert day["decision"].nunique() == 1 and day["candidate"].nunique() == 1 and day["p_correct"].nunique() == 1
    assert table.loc[table["Image"] == images[3], "photos"].item() == 1
    assert summary["test"]["units"] == 4 and summary["test"]["encounters"] == 1  # e2 holds one photo


def test_unreachable_targets_leave_everything_to_review(tmp_path):
    val, test_topk, train, test, _ = _run_tables(n_val=60, n_test=20)
    table, summary, _, _ = decide(val, test_topk, train, test, DecisionSettings(min_support=1000))
    assert (table["decision"] == "review").all()
    assert summary["operating_points"]["match"]["threshold"] is None
    assert summary["validation"]["classes"]["review"]["share"] == 1.0


def _decide(tmp_path, val, test_topk, train, test, params, **extra) -> dict:
    """run_decide on these tables (written to tmp_path, beside an average ensemble's summary at
    threshold 0.5); its output paths: csv, summary, calibration, png."""
    paths = {}
    for name, table in {"val": val, "test_topk": test_topk, "train": train, "test": test}.items():
        paths[name] = tmp_path / f"{name}.parquet"
        table.to_parquet(paths[name])
    (tmp_path / "ensemble.json").write_text(json.dumps({"score": "similarity", "threshold": 0.5}))
    outputs = {k: tmp_path / f"out_{k}" for k in ("csv", "summary", "calibration", "png")}
    run_decide(
        paths["val"],
        paths["test_topk"],
        tmp_path / "ensemble.json",
        paths["train"],
        paths["test"],
        params,
        out=outputs["csv"],
        summary_out=outputs["summary"],
        calibration_out=outputs["calibration"],
        figure_out=outputs["png"],
        **extra,
    )
    return outputs


def test_run_decide_writes_the_table_summary_model_and_reliability_figure(tmp_path):
    val, test_topk, train, test, _ = _run_tables(n_val=200, n_test=30)
    outputs = _decide(tmp_path, val, test_topk, train, test, {"auto_accept_precision": 0.9})
    table = pd.read_csv(outputs["csv"], keep_default_na=False)
    assert list(table.columns) == [
        "Image",
        "decision",
        "Id",
        "candidate",
        "p_correct",
        "p_new",
        "top_score",
        "margin",
        "encounter",
        "photos",
    ]
    summary = json.loads(outputs["summary"].read_text())
    assert summary["operating_points"]["match"]["target_precision"] == 0.9
    assert summary["classes"]["new"].startswith("new individual") and "new_whale" not in json.dumps(summary)
    assert outputs["png"].read_bytes().startswith(b"\x89PNG")
