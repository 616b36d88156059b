"""Synthetic review-page inputs shared by tests/unit/test_review_data.py (data assembly, page
rendering, the review rule's run on them) and tests/workflow/test_review.py (the same page driven in
headless Chromium): train/test/prediction/top-k tables, a vote ensemble's top-k table, the review
rule's input files written from them, the local member's correspondences table, and the data blob
read back from a built page."""

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


# The inlier keypoints of q1 x w_a (gallery t1.jpg, not w_a's representative t2.jpg): the crop's
# corners, its centre and points in between, normalised to [0, 1].
Q1_WA_QUERY_XY = [0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.75, 0.9, 0.1, 0.1, 0.9, 0.6, 0.3]
Q1_WA_GALLERY_XY = [0.05, 0.02, 0.98, 0.97, 0.45, 0.55, 0.3, 0.7, 0.85, 0.15, 0.0, 1.0, 0.62, 0.33]


def _correspondences() -> pd.DataFrame:
    """The local member's correspondences table (one row per test query and gallery identity: the
    shortlisted gallery image with the most inliers) for _tables(): q1 x w_a on a non-representative
    image (7 points), q1 x w_b with 0 inliers, q2 x w_b (2 points); no row for q2 x w_a; and two rows
    the page ignores: a query that is no test image and an identity that is not among q2's candidates."""
    return pd.DataFrame(
        {
            "query": ["q1.jpg", "q1.jpg", "q2.jpg", "q9.jpg", "q2.jpg"],
            "gallery": ["t1.jpg", "t3.jpg", "t3.jpg", "t2.jpg", "t9.jpg"],
            "gallery_id": ["w_a", "w_b", "w_b", "w_a", "w_z"],
            "method": ["sift"] * 5,
            "inliers": [23, 0, 2, 5, 9],
            "probability": [0.93, 0.02, 0.4, 0.5, 0.6],
            "query_xy": [Q1_WA_QUERY_XY, [], [0.2, 0.3, 0.7, 0.4], [0.5, 0.5], [0.5, 0.5]],
            "gallery_xy": [Q1_WA_GALLERY_XY, [], [0.25, 0.35, 0.75, 0.45], [0.5, 0.5], [0.5, 0.5]],
        }
    )


def _write_correspondences(table: pd.DataFrame, path: Path) -> Path:
    """`table` as the local match rule writes it: int32 inliers, float32 probability and points."""
    schema = pa.schema(
        [
            ("query", pa.string()),
            ("gallery", pa.string()),
            ("gallery_id", pa.string()),
            ("method", pa.string()),
            ("inliers", pa.int32()),
            ("probability", pa.float32()),
            ("query_xy", pa.list_(pa.float32())),
            ("gallery_xy", pa.list_(pa.float32())),
        ]
    )
    pq.write_table(pa.Table.from_pandas(table, schema=schema, preserve_index=False), path)
    return path


def _synthetic_run(
    folder: Path, topk: pd.DataFrame, summary: dict, correspondences: pd.DataFrame | None = None
) -> dict:
    """The review rule's inputs from _tables(), with a small photo per image (photo = its crop);
    with `correspondences`, its table too (correspondences_path)."""
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
    extra = {}
    if correspondences is not None:
        extra["correspondences_path"] = _write_correspondences(correspondences, folder / "correspondences.parquet")
    return {
        **extra,
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
