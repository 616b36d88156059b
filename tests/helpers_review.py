"""Synthetic review-page inputs shared by tests/unit/test_review_data.py (data assembly, page
rendering, the review rule's run on them) and tests/workflow/test_review.py (the same page driven in
headless Chromium): train/test/prediction/top-k tables, a vote ensemble's top-k table, the review
rule's input files written from them, and the data blob read back from a built page."""

import json
import re
from pathlib import Path

import pandas as pd
from PIL import Image


def _tables():
    train = pd.DataFrame(
        {
            "image": ["t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg"],
            "path": ["/d/t1.jpg", "/d/t2.jpg", "/d/t3.jpg", "/d/t4.jpg"],
            "id": ["w_a", "w_a", "w_b", "new_whale"],
            "width": [100, 300, 50, 900],
            "height": [50, 100, 50, 900],
        }
    )
    test = pd.DataFrame({"image": ["q2.jpg", "q1.jpg"], "path": ["/d/q2.jpg", "/d/q1.jpg"]})
    predictions = pd.DataFrame({"image": ["q1.jpg", "q2.jpg"], "predicted": ["w_a new_whale w_b", "new_whale w_b w_a"]})
    topk = pd.DataFrame(
        {
            "image": ["q1.jpg", "q1.jpg", "q2.jpg", "q2.jpg"],
            "rank": [0, 1, 1, 0],
            "id": ["w_a", "w_b", "w_a", "w_b"],
            "similarity": [0.97, 0.50, 0.70, 0.88],
        }
    )
    return train, test, predictions, topk


def _vote_topk():
    """A vote ensemble's test top-k table: vote shares, new_whale voted for like any identity."""
    return pd.DataFrame(
        {
            "image": ["q1.jpg", "q1.jpg", "q1.jpg", "q2.jpg", "q2.jpg", "q2.jpg"],
            "rank": [0, 1, 2, 0, 1, 2],
            "id": ["w_a", "new_whale", "w_b", "new_whale", "w_b", "w_a"],
            "similarity": [0.9, 0.5, 0.2, 0.6, 0.55, 0.3],
        }
    )


def _synthetic_run(folder: Path, topk: pd.DataFrame, summary: dict) -> dict:
    """The review rule's inputs from _tables(), with a small photo per image (photo = its crop)."""
    train, test, predictions, _ = _tables()
    paths = {}
    for image in [*train["image"], *test["image"]]:
        paths[image] = folder / image
        Image.new("RGB", (40, 30), (len(paths) * 30, 90, 160)).save(paths[image])
    train["path"], test["path"] = train["image"].map(paths).astype(str), test["image"].map(paths).astype(str)
    splits = ["train"] * len(train) + ["test"] * len(test)
    align = pd.DataFrame({"image": [*train["image"], *test["image"]], "split": splits})
    align["crop_path"] = align["image"].map(paths).astype(str)
    inputs = {"train": train, "test": test, "predictions": predictions, "align": align, "topk": topk}
    for name, table in inputs.items():
        table.to_parquet(folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps(summary))
    return {
        "train_path": folder / "train.parquet",
        "test_path": folder / "test.parquet",
        "align_path": folder / "align.parquet",
        "predictions_path": folder / "predictions.parquet",
        "summary_path": folder / "summary.json",
        "topk_path": folder / "topk.parquet",
        "out": folder / "index.html",
    }


def _page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    blob = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob)
