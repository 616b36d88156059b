"""The two outputs made for Snakemake's HTML report: the data summary figure and the metrics table,
on synthetic tables (the report of the tiny run itself is in tests/workflow/test_report.py)."""

import json

import pandas as pd
import pytest
from PIL import Image

from flukeline.core.errors import InputError
from flukeline.evaluate.data_summary import plot_data_summary, run_data_summary
from flukeline.evaluate.metrics_table import metrics_html, metrics_rows, run_metrics_table


def _frames():
    train = pd.DataFrame(
        {
            "id": ["w_a", "w_a", "w_a", "w_b", "w_c", "new_whale", "new_whale"],
            "width": [100, 100, 100, 200, 200, 100, 300],
            "height": [50, 50, 50, 80, 80, 50, 90],
            "grayscale": [True, False, False, False, True, False, False],
        }
    )
    test = pd.DataFrame({"width": [100, 100, 400], "height": [50, 50, 60], "grayscale": [True, True, False]})
    return train, test


def test_data_summary_counts_identities_sizes_and_grayscale(tmp_path):
    train, test = _frames()
    counts = plot_data_summary(train, test, tmp_path / "summary.png")
    # Two identities with one image, one with three; new_whale is counted apart, not as an identity.
    assert counts["identities_by_images"] == {1: 2, 3: 1}
    assert counts["n_identities"] == 3 and counts["new_whale_images"] == 2
    assert counts["grayscale_images"] == {"train": 2, "test": 2}
    assert counts["grayscale_share"] == pytest.approx({"train": 2 / 7, "test": 2 / 3})
    assert counts["distinct_sizes"] == {"train": 3, "test": 2}
    assert counts["most_common_size"] == {"train": [100, 50], "test": [100, 50]}
    with Image.open(tmp_path / "summary.png") as image:
        assert image.format == "PNG" and image.width > image.height > 200
    # The same data give the same bytes (no timestamp): a rerun or a cluster run matches.
    plot_data_summary(train, test, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "summary.png").read_bytes()


def test_data_summary_names_the_table_and_missing_column(tmp_path):
    train, test = _frames()
    train.to_parquet(tmp_path / "train.parquet")
    test.drop(columns="grayscale").to_parquet(tmp_path / "test.parquet")
    with pytest.raises(InputError, match=r"test\.parquet: missing column\(s\) \['grayscale'\]"):
        run_data_summary(tmp_path / "train.parquet", tmp_path / "test.parquet", tmp_path / "summary.png")


def _scores(map5, n=10):
    return {"map5": map5, "top1": map5 / 2, "n": n}


METRICS = {
    "cv": {
        "folds": [0, 1],
        "all_new_whale": _scores(0.30, 20),
        "methods": {
            # Out of order on purpose: the table sorts by round, members before the ensemble.
            "ensemble@round0": {**_scores(0.55), "all_new_whale_same_folds": _scores(0.31)},
            "r18@round1": {**_scores(0.52), "all_new_whale_same_folds": _scores(0.31)},
            "r18@round0": {**_scores(0.50), "all_new_whale_same_folds": _scores(0.31)},
        },
    },
    "test": {
        "submission": _scores(0.61),
        "all_new_whale": _scores(0.28),
        "methods": {"ensemble@round0": _scores(0.60), "r18@round1": _scores(0.58), "r18@round0": _scores(0.57)},
    },
}
SUMMARIES = {
    "ensemble@round0": {"threshold": 0.65},
    "r18@round0": {"threshold": 0.7},
    "r18@round1": {"threshold": 0.75},
}


def test_metrics_table_rows_per_member_round_and_ensemble():
    table = metrics_rows(METRICS, SUMMARIES)
    assert table[["round", "method"]].values.tolist() == [[0, "r18"], [0, "ensemble"], [1, "r18"]]
    assert table["CV MAP@5"].tolist() == [0.50, 0.55, 0.52]
    assert table["new-individual threshold"].tolist() == [0.7, 0.65, 0.75]
    assert table["test MAP@5"].tolist() == [0.57, 0.60, 0.58]
    page = metrics_html(METRICS, SUMMARIES)
    assert page.startswith("<!DOCTYPE html>") and "<table" in page and "0.6500" in page
    assert "submission MAP@5 0.6100" in page and "0.3000 on every fold" in page
    # People read the page: Kaggle's label appears only where it names submission.csv's token.
    assert page.count("new_whale") == 1 and "(new_whale in submission.csv)" in page
    assert "every photo a new individual 0.2800" in page
    # Without test identities (a user's data) there is no test column.
    without_test = {k: v for k, v in METRICS.items() if k != "test"}
    assert "test MAP@5" not in metrics_rows(without_test, SUMMARIES).columns


def test_metrics_table_names_what_is_missing(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    for name, threshold in SUMMARIES.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(threshold))
    given = [(name, str(tmp_path / f"{name}.json")) for name in SUMMARIES]
    with pytest.raises(InputError, match=r"scores 'r18@round1', but no match summary"):
        run_metrics_table(tmp_path / "metrics.json", given[:2], tmp_path / "metrics.html")
    (tmp_path / "r18@round1.json").write_text("{}")
    with pytest.raises(InputError, match=r"r18@round1\.json: no 'threshold' key"):
        run_metrics_table(tmp_path / "metrics.json", given, tmp_path / "metrics.html")
