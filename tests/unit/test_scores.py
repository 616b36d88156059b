"""evaluate.scores: baselines scored beside the methods, and the warning when the submission's
method does not beat a reference without training."""

import json

import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.evaluate.scores import evaluate


def _predictions(path, rows):
    table = pd.DataFrame(rows, columns=["image", "predicted", "truth"]).assign(fold=0)
    table.to_parquet(path)
    return str(path)


@pytest.fixture
def run(tmp_path):
    truth = ["A", "B", "new_whale", "C"]
    images = [f"i{k}.jpg" for k in range(4)]
    baseline = _predictions(
        tmp_path / "all_new_whale.parquet", [(i, "new_whale A B C D", t) for i, t in zip(images, truth)]
    )
    # The ensemble finds 2 of the 3 known individuals first; the pixel baseline all of them.
    ensemble = _predictions(
        tmp_path / "ensemble.parquet",
        [
            ("i0.jpg", "A new_whale B C D", "A"),
            ("i1.jpg", "B new_whale A C D", "B"),
            ("i2.jpg", "new_whale A B C D", "new_whale"),
            ("i3.jpg", "new_whale A B C D", "C"),
        ],
    )
    pixel = _predictions(
        tmp_path / "pixel.parquet",
        [
            ("i0.jpg", "A new_whale B C D", "A"),
            ("i1.jpg", "B new_whale A C D", "B"),
            ("i2.jpg", "new_whale A B C D", "new_whale"),
            ("i3.jpg", "C new_whale A B D", "C"),
        ],
    )
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"Image": images, "Id": "new_whale A B C D"}).to_csv(submission, index=False)
    return baseline, ensemble, pixel, str(submission)


def test_baselines_are_scored_on_the_same_images_and_a_better_one_is_warned_about(run):
    baseline, ensemble, pixel, submission = run
    metrics = evaluate(
        baseline,
        [("ensemble@round0", ensemble, ensemble)],
        submission,
        baselines=[("pixel_1nn", pixel, pixel)],
        submission_method="ensemble@round0",
    )
    assert metrics["cv"]["methods"]["ensemble@round0"]["map5"] == pytest.approx((1 + 1 + 1 + 1 / 4) / 4)  # C at rank 4
    assert metrics["cv"]["methods"]["ensemble@round0"]["known_top1"] == pytest.approx(2 / 3)
    assert metrics["cv"]["baselines"]["pixel_1nn"]["map5"] == 1.0
    assert metrics["warnings"] == [
        "the submission (ensemble@round0) scores validation MAP@5 0.812, not above the pixel_1nn baseline's 1.000 "
        "on the same images: training did not beat a reference without training; try: a zero-shot member in "
        "embed.active_members (type: zero_shot), a larger crop in align.sizes, more epochs or a lower backbone lr; "
        "check the align contact sheet (do the crops hold the animal?)"
    ]


def test_no_warning_when_the_submission_beats_every_baseline(run):
    baseline, ensemble, pixel, submission = run
    metrics = evaluate(
        baseline,
        [("ensemble@round0", pixel, pixel)],
        submission,
        baselines=[("zero_shot_1nn", ensemble, ensemble)],
        submission_method="ensemble@round0",
    )
    assert metrics["warnings"] == []


def test_the_local_matcher_alone_is_a_reference_the_submission_must_beat(run):
    baseline, ensemble, pixel, submission = run
    metrics = evaluate(
        baseline,
        [("ensemble@round0", ensemble, ensemble), ("local_sift@round0", pixel, pixel)],
        submission,
        baselines=[("zero_shot_1nn", ensemble, ensemble)],
        submission_method="ensemble@round0",
    )
    assert len(metrics["warnings"]) == 1
    assert "not above the local_sift@round0 baseline's 1.000" in metrics["warnings"][0]
    assert "the trained members add nothing to the local matcher alone" in metrics["warnings"][0]


def test_an_unknown_submission_method_is_named(run):
    baseline, ensemble, _, submission = run
    with pytest.raises(InputError, match="--submission-method 'ensemble@round1' is not among the scored methods"):
        evaluate(baseline, [("ensemble@round0", ensemble, ensemble)], submission, submission_method="ensemble@round1")


def test_metrics_page_puts_the_warning_first_and_lists_the_references(run):
    from flukeline.evaluate.metrics_table import metrics_html

    baseline, ensemble, pixel, submission = run
    metrics = evaluate(
        baseline,
        [("ensemble@round0", ensemble, ensemble)],
        submission,
        baselines=[("pixel_1nn", pixel, pixel)],
        submission_method="ensemble@round0",
    )
    page = metrics_html(metrics, {"ensemble@round0": {"threshold": 0.5}})
    warning = page.index('<p class="warning">Warning: the submission (ensemble@round0) scores validation MAP@5 0.812')
    assert warning < page.index("<h3>MAP@5 per member and ensemble</h3>")
    references = page[page.index("References without training") :]
    assert "every photo a new individual" in references and "pixel_1nn" in references and "1.0000" in references


# --- test predictions in the user's ids (data.group_duplicate_ids / group_new_whale_duplicates) -----

ID_GROUPS_HEADER = "training_id,original_id,n_images,groups,reason\n"
# ab merges w_a (3 training photos) and w_b (1): expanded w_a first; nw~1 is a synthetic new_whale id.
ID_GROUPS_ROWS = "ab,w_a,3,1,conflicting_ids\nab,w_b,1,1,conflicting_ids\nnw~1,new_whale,2,2,new_whale_duplicates\n"
TRAIN = pd.DataFrame(
    {
        "image": ["a1", "a2", "a3", "b1", "c1", "c2", "d1", "n1", "n2", "n3"],
        "id": ["ab", "ab", "ab", "ab", "c", "c", "d", "nw~1", "nw~1", "new_whale"],
        "original_id": ["w_a", "w_a", "w_a", "w_b", "c", "c", "d", "new_whale", "new_whale", "new_whale"],
    }
)
# q1 (w_b) and q2 (w_a): ab is listed; q3 (new_whale): nw~1 first; q4 (new_whale): nw~1 second, after
# c, with new_whale too; q5 (w_a): the list repeats one wrong id, which only the expansion's fill changes.
TEST_TRUTH = {"q1": "w_b", "q2": "w_a", "q3": "new_whale", "q4": "new_whale", "q5": "w_a"}
TEST_PREDICTED = {
    "q1": "c ab d new_whale x",  # -> c w_a w_b d new_whale: w_b third
    "q2": "ab c d new_whale x",  # -> w_a w_b c d new_whale: w_a first
    "q3": "nw~1 c d x y",  # -> new_whale c d x y: first
    "q4": "c nw~1 new_whale d x",  # -> c new_whale d x + w_a (the fill): new_whale second
    "q5": "x x x x x",  # -> x, then the most frequent original ids w_a c d w_b: w_a second
}


@pytest.fixture
def grouped_run(tmp_path):
    """Files for evaluate(): a method whose test predictions speak training ids, the truth (the
    user's ids), id_groups.csv (with the groups and empty) and train.parquet."""
    images = list(TEST_TRUTH)
    val = _predictions(tmp_path / "val.parquet", [("v1", "ab new_whale c d x", "ab")])
    baseline = _predictions(tmp_path / "baseline.parquet", [("v1", "new_whale ab c d x", "ab")])
    test = tmp_path / "test_predictions.parquet"
    pd.DataFrame({"image": images, "predicted": list(TEST_PREDICTED.values())}).to_parquet(test)
    truth = tmp_path / "test_truth.csv"
    pd.DataFrame({"Image": images, "Id": list(TEST_TRUTH.values())}).to_csv(truth, index=False)
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"Image": images, "Id": "new_whale w_a c d w_b"}).to_csv(submission, index=False)
    groups = tmp_path / "id_groups.csv"
    groups.write_text(ID_GROUPS_HEADER + ID_GROUPS_ROWS)
    empty = tmp_path / "id_groups_empty.csv"
    empty.write_text(ID_GROUPS_HEADER)  # what ingest writes with both switches off
    train = tmp_path / "train.parquet"
    TRAIN.to_parquet(train)
    return {
        "baseline": baseline,
        "methods": [("ensemble@round0", val, str(test))],
        "baselines": [("pixel_1nn", val, str(test))],
        "submission": str(submission),
        "truth": str(truth),
        "groups": str(groups),
        "empty": str(empty),
        "train": str(train),
    }


def _evaluate(run, id_groups=None, train=None) -> dict:
    return evaluate(
        run["baseline"],
        run["methods"],
        run["submission"],
        test_truth_path=run["truth"],
        baselines=run["baselines"],
        id_groups_path=id_groups,
        train_path=train,
    )


def test_merged_and_synthetic_ids_score_at_the_position_their_expansion_gives(grouped_run):
    metrics = _evaluate(grouped_run, grouped_run["groups"], grouped_run["train"])
    for group, name in (("methods", "ensemble@round0"), ("baselines", "pixel_1nn")):
        test = metrics["test"][group][name]
        # q1: w_b third; q2: w_a first; q3: new_whale first; q4: new_whale second; q5: w_a second.
        assert test["map5"] == pytest.approx((1 / 3 + 1 + 1 + 1 / 2 + 1 / 2) / 5)
        assert test["top1"] == pytest.approx(2 / 5)
        assert (test["new_whale_precision"], test["new_whale_recall"]) == (1.0, 0.5)  # q3 only, of q3 and q4
    # Read as they are, the training ids never name the truth's ids (the bug): only q4's plain
    # new_whale (3rd) scores, and no list starts with new_whale.
    raw = _evaluate(grouped_run)["test"]["methods"]["ensemble@round0"]
    assert (raw["map5"], raw["top1"], raw["new_whale_recall"]) == (pytest.approx((1 / 3) / 5), 0.0, 0.0)
    # Validation truth is in training ids: scored as it is, with id groups or without.
    assert metrics["cv"] == _evaluate(grouped_run)["cv"]
    assert metrics["cv"]["methods"]["ensemble@round0"]["map5"] == 1.0


def test_a_method_scores_as_the_submission_it_would_make(grouped_run, tmp_path):
    """The same expansion: the final ensemble's test score equals the score of the submission
    written from its predictions (no leaks, candidates or embeddings: photo-count order)."""
    from flukeline.data.id_groups import read_id_groups
    from flukeline.evaluate.scores import score_submission
    from flukeline.evaluate.submission import write_submission

    test = pd.read_parquet(grouped_run["methods"][0][2])
    out = tmp_path / "ensemble_submission.csv"
    write_submission(test[["image"]], test, out, train=TRAIN, id_groups=read_id_groups(grouped_run["groups"]))
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert written["Id"].tolist() == [
        "c w_a w_b d new_whale",
        "w_a w_b c d new_whale",
        "new_whale c d x y",
        "c new_whale d x w_a",
        "x w_a c d w_b",
    ]
    truth = pd.read_csv(grouped_run["truth"], dtype=str, keep_default_na=False)
    metrics = _evaluate(grouped_run, grouped_run["groups"], grouped_run["train"])
    # The method's entry adds the open-set scores of its lists (evaluate/open_set.py), the rest is the submission's.
    method = dict(metrics["test"]["methods"]["ensemble@round0"])
    assert method.pop("open_set")["new_share_predicted"] == pytest.approx(1 / 5)
    assert method == score_submission(written, truth)


def test_without_id_groups_the_scores_are_the_old_paths_exactly(grouped_run):
    from flukeline.evaluate.scores import score_submission

    old = _evaluate(grouped_run)
    # Both switches off: ingest's id_groups.csv lists nothing, and nothing is expanded or filled
    # (q5's "x x x x x" would become "x w_a c d w_b", and ab / nw~1 their original ids).
    new = _evaluate(grouped_run, grouped_run["empty"], grouped_run["train"])
    assert json.dumps(new, sort_keys=False) == json.dumps(old, sort_keys=False)
    test = pd.read_parquet(grouped_run["methods"][0][2])
    truth = pd.read_csv(grouped_run["truth"], dtype=str, keep_default_na=False)
    direct = score_submission(pd.DataFrame({"Image": test["image"], "Id": test["predicted"]}), truth)
    assert {k: v for k, v in new["test"]["methods"]["ensemble@round0"].items() if k != "open_set"} == direct
    assert direct["map5"] == pytest.approx((1 / 3) / 5)


def test_the_evaluate_command_reads_the_id_groups_and_writes_the_same_bytes_without_them(grouped_run, tmp_path):
    from flukeline import cli

    run = grouped_run
    name, val, test = run["methods"][0]
    base = ["evaluate", "--baseline", run["baseline"], "--method", name, val, test]
    base += ["--submission", run["submission"], "--test-truth", run["truth"]]
    outputs = {}
    for label, extra in {
        "plain": [],
        "empty": ["--id-groups", run["empty"], "--train", run["train"]],
        "groups": ["--id-groups", run["groups"], "--train", run["train"]],
    }.items():
        outputs[label] = tmp_path / f"metrics_{label}.json"
        assert cli.main([*base, *extra, "--out", str(outputs[label])]) == 0
    assert outputs["empty"].read_bytes() == outputs["plain"].read_bytes()
    grouped = json.loads(outputs["groups"].read_text())["test"]["methods"][name]
    assert grouped["map5"] == pytest.approx((1 / 3 + 1 + 1 + 1 / 2 + 1 / 2) / 5)
    # Id groups without the train table (which fills shortened lists) are named, not guessed around.
    assert cli.main([*base, "--id-groups", run["groups"], "--out", str(tmp_path / "m.json")]) == 1
    with pytest.raises(InputError, match=r"needs the train table \(--train\)"):
        _evaluate(run, run["groups"])
