"""The decisions round trip in headless Chromium, on a small Kaggle root: ingest, decisions
(flukeline decide on constructed validation evidence), the review page opening on the photos to
review with their probabilities and classes, a person's export, `flukeline accept`, and the next
ingest training on the accepted photos. Needs no workflow run (seconds)."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flukeline.cli import main
from flukeline.data.ingest import ingest
from flukeline.review.page import run as review_page

TRAIN = {"t1.png": "w_a", "t2.png": "w_a", "t3.png": "w_b", "t4.png": "w_c"}
# Test photo -> (top identity, top similarity, margin): strong, weak and middling evidence.
TEST = {
    "q0.png": ("w_a", 0.97, 0.25),
    "q1.png": ("w_b", 0.21, 0.01),
    "q2.png": ("w_b", 0.62, 0.05),
    "q3.png": ("w_c", 0.58, 0.02),
    "q4.png": ("w_a", 0.95, 0.28),
}


def _photo(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)


def _validation(n=400, seed=0):
    """Validation evidence whose right answers and new individuals follow the score."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        top, margin = rng.uniform(0.2, 1.0), rng.uniform(0, 0.3)
        new = rng.uniform() < 1 / (1 + np.exp(25 * (top - 0.4)))
        right = not new and rng.uniform() < 1 / (1 + np.exp(-(14 * (top - 0.65) + 10 * margin)))
        truth = "new_whale" if new else ("w_a" if right else "w_b")
        rows += [(f"v{i}", 0, "w_a", top, 0, truth), (f"v{i}", 1, "w_c", top - margin, 0, truth)]
    return pd.DataFrame(rows, columns=["image", "rank", "id", "similarity", "fold", "truth"])


def _test_topk():
    rows = []
    for image, (top_id, top, margin) in TEST.items():
        other = "w_c" if top_id != "w_c" else "w_a"
        rows += [(image, 0, top_id, top), (image, 1, other, top - margin)]
    return pd.DataFrame(rows, columns=["image", "rank", "id", "similarity"])


def _export(page, folder: Path) -> Path:
    """The export, kept under `folder` by the name the page gives it (a closed context deletes its downloads)."""
    with page.expect_download() as download:
        page.click("#export")
    name = download.value.suggested_filename
    assert name.startswith("review_decisions_") and name.endswith(".csv")
    download.value.save_as(folder / name)
    return folder / name


def test_review_export_accept_and_the_next_ingest(tmp_path, chromium):
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for i, name in enumerate(TRAIN):
        _photo(root / "train" / name, i)
    for i, name in enumerate(TEST):
        _photo(root / "test" / name, 100 + i)
    pd.DataFrame({"Image": list(TRAIN), "Id": list(TRAIN.values())}).to_csv(root / "train.csv", index=False)
    results = tmp_path / "results"
    ingest(root, results / "train.parquet", results / "test.parquet", results / "rejected.csv", {"folds": 2})

    # The decide command on the ensemble-like tables.
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    _validation().to_parquet(ensemble / "val_topk.parquet")
    topk = _test_topk()
    topk.to_parquet(ensemble / "test_topk.parquet")
    (ensemble / "summary.json").write_text(json.dumps({"score": "similarity", "threshold": 0.4}))
    decisions = results / "decisions.csv"
    assert (
        main(
            [
                "decide",
                *("--val-topk", str(ensemble / "val_topk.parquet"), "--test-topk", str(ensemble / "test_topk.parquet")),
                *("--ensemble-summary", str(ensemble / "summary.json")),
                *("--train", str(results / "train.parquet"), "--test", str(results / "test.parquet")),
                *("--out", str(decisions), "--summary", str(results / "decisions/summary.json")),
                *("--calibration", str(results / "decisions/calibration.json")),
                *("--figure", str(results / "decisions/reliability.png")),
            ]
        )
        == 0
    )
    decided = pd.read_csv(decisions, keep_default_na=False).set_index("Image")
    assert decided.loc["q0.png", "decision"] == "match" and decided.loc["q0.png", "Id"] == "w_a"
    assert decided.loc["q1.png", "decision"] == "new"
    assert decided.loc[["q2.png", "q3.png"], "decision"].tolist() == ["review", "review"]

    # The review page (photo = crop here) with the decisions.
    test = pd.read_parquet(results / "test.parquet")
    train = pd.read_parquet(results / "train.parquet")
    align = pd.DataFrame(
        {
            "image": [*train["image"], *test["image"]],
            "split": ["train"] * len(train) + ["test"] * len(test),
            "crop_path": [*train["path"], *test["path"]],
        }
    )
    align.to_parquet(tmp_path / "align.parquet")
    predicted = {image: f"{top_id} new_whale" if top < 0.4 else top_id for image, (top_id, top, _) in TEST.items()}
    pd.DataFrame({"image": list(predicted), "predicted": list(predicted.values())}).to_parquet(
        tmp_path / "pred.parquet"
    )
    review_page(
        results / "train.parquet",
        results / "test.parquet",
        tmp_path / "align.parquet",
        tmp_path / "pred.parquet",
        ensemble / "summary.json",
        ensemble / "test_topk.parquet",
        out=tmp_path / "index.html",
        decisions_path=decisions,
    )

    context = chromium.new_context(accept_downloads=True, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((tmp_path / "index.html").as_uri())
    # The page opens on the photos to review: they come first, the first of them selected.
    order = page.eval_on_selector_all("li.query:not([hidden])", "els => els.map(e => e.dataset.image)")
    classes = [decided.loc[image, "decision"] for image in order]
    review_count = classes.count("review")
    assert classes[:review_count] == ["review"] * review_count and "review" not in classes[review_count:]
    assert page.input_value("#sort") == "review-first"
    assert page.get_attribute("li.query.selected", "data-image") == order[0]
    head = page.inner_text('li.query[data-image="q0.png"] .query-head')
    assert "auto-accepted match: w_a" in head
    assert f"P(top identity is right) {decided.loc['q0.png', 'p_correct']:.3f}" in head
    assert "new individual (automatic)" in page.inner_text('li.query[data-image="q1.png"] .query-head')
    assert "new_whale" not in page.inner_text("body")  # the user sees "new individual"
    page.select_option("#filter", "class-review")
    assert page.locator("li.query:not([hidden])").count() == review_count

    # A person confirms q2's top candidate, calls q3 a new individual and confirms q0's match.
    page.click('li.query[data-image="q2.png"] .card[data-k="1"] button')
    page.click('li.query[data-image="q3.png"] button.new')
    page.select_option("#filter", "all")
    page.click('li.query[data-image="q0.png"] .card[data-k="1"] button')
    exported = _export(page, tmp_path)
    rows = list(csv.reader(io.StringIO(exported.read_text())))
    assert rows[0] == ["Image", "decision", "Id"]
    assert sorted(rows[1:]) == [["q0.png", "match", "w_a"], ["q2.png", "match", "w_b"], ["q3.png", "new", "new_whale"]]
    assert errors == []
    context.close()

    catalogue = tmp_path / "catalogue"
    common = ["--test", str(results / "test.parquet"), "--train", str(results / "train.parquet")]
    assert main(["accept", "--decisions", str(exported), *common, "--catalogue", str(catalogue)]) == 0
    version = catalogue / "catalogue-0001.csv"
    accepted = pd.read_csv(version, dtype=str, keep_default_na=False).set_index("Image")
    assert accepted.loc[["q0.png", "q2.png", "q3.png"], "Id"].tolist() == ["w_a", "w_b", "flk_0001"]

    # The next run: a new batch in test/ (the reviewed photos live on in the catalogue).
    for image in ("q0.png", "q2.png", "q3.png"):
        (root / "test" / image).unlink()
    _photo(root / "test" / "q5.png", 200)
    nxt = tmp_path / "next"
    ingest(root, nxt / "train.parquet", nxt / "test.parquet", nxt / "rejected.csv", {"folds": 2}, catalogue=version)
    trained = pd.read_parquet(nxt / "train.parquet").set_index("image")
    assert trained.loc[["q0.png", "q2.png", "q3.png"], "id"].tolist() == ["w_a", "w_b", "flk_0001"]
    assert len(trained) == len(TRAIN) + 3
    assert sorted(pd.read_parquet(nxt / "test.parquet")["image"]) == ["q1.png", "q4.png", "q5.png"]
