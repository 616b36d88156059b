"""The new_whale threshold compared with a candidate's lift over its photo's cohort
(flukeline.match.cohort, `match.new_whale_score`): the cohort and the offsets, lists and the
calibrated threshold unchanged by a shift of all of a photo's scores (validation matched against
the other folds, test against the whole catalogue), the pseudo-label rule, and the gallery and the
review page reading which score a run calibrated on."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.cohort import COHORT, LIFT, SIMILARITY, cohort_means, threshold_offsets
from flukeline.match.new_whale_threshold import calibrate_threshold, ranked_predictions
from flukeline.match.pseudo_labels import select_pseudo_labels
from flukeline.match.tables import to_long


def _photo(image, sims, truth=None, ids=None):
    sims = np.asarray(sims, dtype=np.float64)
    ids = np.array([ids or [f"id{j}" for j in range(len(sims))]], dtype=object)
    return to_long([image], ids, sims[None, :], **({} if truth is None else {"truth": truth, "fold": 0}))


def test_cohort_is_the_mean_of_the_next_identities_and_skips_new_whale():
    table = pd.concat(
        [
            _photo("a", [0.9] + [0.5] * COHORT + [0.0, 0.0]),  # ranks beyond the cohort are ignored
            _photo("b", [0.8, 0.7, 0.6], ids=["x", NEW_WHALE, "y"]),  # new_whale is no identity
            _photo("c", [0.6]),  # one identity: no cohort
        ]
    )
    means = cohort_means(table)
    assert means["a"] == pytest.approx(0.5) and means["b"] == pytest.approx(0.6)
    assert "c" not in means.index


def test_threshold_offsets_per_score():
    table = pd.concat([_photo("a", [0.9, 0.5, 0.3]), _photo("b", [0.6, 0.2, 0.2]), _photo("c", [0.7])])
    assert threshold_offsets(table, ["a", "b", "c"], SIMILARITY).tolist() == [0.0, 0.0, 0.0]
    lift = threshold_offsets(table, ["a", "b", "c"], LIFT)
    # c has no cohort: the median of the others' cohort means keeps it on the table's scale.
    assert lift == pytest.approx([0.4, 0.2, 0.3])
    with pytest.raises(InputError, match="new_whale_score: 'raw' is not one of lift, similarity"):
        threshold_offsets(table, ["a"], "raw")


def _shifted(table: pd.DataFrame, shift: float) -> pd.DataFrame:
    return table.assign(similarity=table["similarity"] + shift)


def _validation(rng, n=60):
    """Photos whose top identity stands out of a flat cohort when known (their truth) and not when new."""
    parts = []
    for i in range(n):
        new = i % 3 == 0
        cohort = rng.uniform(0.2, 0.4)
        top = cohort + (0.05 if new else 0.3) + rng.uniform(-0.02, 0.02)
        sims = [top] + sorted(cohort + rng.uniform(-0.03, 0.03, size=COHORT), reverse=True)
        parts.append(_photo(f"p{i}", sims, truth=NEW_WHALE if new else "id0"))
    return pd.concat(parts, ignore_index=True)


def test_lift_threshold_survives_a_shift_of_every_score_that_the_similarity_threshold_does_not():
    rng = np.random.default_rng(0)
    val = _validation(rng)
    grid = np.arange(-0.2, 1.0, 0.01)
    test = val.drop(columns=["fold"])  # the same photos matched against a larger gallery: every score 0.15 higher
    higher = _shifted(test, 0.15)
    truth = test.drop_duplicates("image").set_index("image")["truth"]

    def first_guess_right(threshold, score):
        lists = ranked_predictions(higher, threshold, 5, score).set_index("image")["predicted"]
        return np.mean([lists[i].split()[0] == truth[i] for i in truth.index])

    lift_threshold, _ = calibrate_threshold(val, grid, 5, score=LIFT)
    similarity_threshold, _ = calibrate_threshold(val, grid, 5, score=SIMILARITY)
    assert first_guess_right(lift_threshold, LIFT) == 1.0
    # The raw threshold, chosen where scores were lower, calls the shifted new photos known.
    assert first_guess_right(similarity_threshold, SIMILARITY) < 0.8  # most of the 20 new photos
    # Lists and the curve are those of the unshifted photos, shift for shift.
    same = ranked_predictions(test, lift_threshold, 5, LIFT)
    assert same["predicted"].tolist() == ranked_predictions(higher, lift_threshold, 5, LIFT)["predicted"].tolist()
    threshold_a, curve_a = calibrate_threshold(val, grid, 5, score=LIFT)
    threshold_b, curve_b = calibrate_threshold(_shifted(val, 0.15), grid, 5, score=LIFT)
    assert threshold_a == threshold_b and np.allclose(curve_a["map5"], curve_b["map5"])
    # best_similarity stays the raw similarity.
    assert same.set_index("image").loc["p1", "best_similarity"] == pytest.approx(
        test[test["image"] == "p1"]["similarity"].max()
    )


def test_pseudo_labels_are_taken_above_the_threshold_on_the_lift():
    table = pd.concat(
        [
            _photo("stands_out", [0.5, 0.2, 0.2]),  # lift 0.3
            _photo("high_but_flat", [0.9, 0.85, 0.8]),  # lift 0.075: its cohort is as high
        ]
    )
    taken = select_pseudo_labels(table, threshold=0.2, min_similarity=0.4, min_margin=0.01, round_=1, score=LIFT)
    assert taken["image"].tolist() == ["stands_out"]
    assert "lift 0.300 >= 0.200" in taken["reason"].iloc[0]
    # With the raw similarity the threshold is a similarity floor: both are above 0.2 and 0.4.
    raw = select_pseudo_labels(table, threshold=0.2, min_similarity=0.4, min_margin=0.01, round_=1)
    assert sorted(raw["image"]) == ["high_but_flat", "stands_out"]


def test_gallery_keeps_the_score_its_run_calibrated_on(tmp_path):
    from flukeline.gallery.manifest import manifest_from_run, match_settings

    member = {"name": "a@round0", "size": "128x64", "weight": 1.0, "models": [tmp_path / "m"], "embeddings": []}
    summary = {"members": {"a@round0": 1.0}, "threshold": 0.12, "new_whale_score": LIFT}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    path = manifest_from_run(tmp_path / "g", tmp_path / "t", {}, None, {}, {}, [member], tmp_path / "summary.json")
    manifest = json.loads(path.read_text())
    assert manifest["match"]["new_whale_score"] == LIFT and match_settings(manifest).new_whale_score == LIFT
    # A gallery written before the key existed calibrated on the raw similarity, whatever the default now.
    assert match_settings({"match": {}}).new_whale_score == SIMILARITY
    del summary["new_whale_score"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    path = manifest_from_run(tmp_path / "h", tmp_path / "t", {}, None, {}, {}, [member], tmp_path / "summary.json")
    assert json.loads(path.read_text())["match"]["new_whale_score"] == SIMILARITY


def test_review_close_calls_are_measured_on_the_score_the_threshold_was_calibrated_on():
    from helpers_review import _tables

    from flukeline.review.page import assemble_review

    train, test, predictions, topk = _tables()  # q2: top 0.88, next 0.70 (lift 0.18); q1: lift 0.47
    options = {"threshold": 0.2, "near_threshold": 0.05, "min_margin": 0.01}
    lifted = assemble_review(test, train, predictions, topk, **options, new_whale_score=LIFT)
    assert lifted["new_whale_score"] == LIFT
    assert [q["low_confidence"] for q in lifted["queries"]] == [True, False]  # q2's lift is 0.02 from it
    raw = assemble_review(test, train, predictions, topk, **options)
    assert [q["low_confidence"] for q in raw["queries"]] == [False, False]  # 0.88 is far from 0.2
