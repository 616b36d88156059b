"""evaluate.scores: baselines scored beside the methods, and the warning when the submission's
method does not beat a reference without training."""

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
