"""The viewpoint estimate (match/viewpoint_estimate.py): a side that shows in the photo (the
mirrored embedding differs from the plain one by a side-dependent direction) is learned from the
labelled photos and fills the others; a side that does not show stays at chance and is not used;
recorded viewpoints are never replaced."""

import json

import numpy as np
import pandas as pd

from flukeline.cli import main
from flukeline.match.scope import build_scope
from flukeline.match.settings import ScopeSettings
from flukeline.match.viewpoint_estimate import estimate_viewpoints, photo_features, with_estimated_viewpoints


def _photos(n=120, labelled=0.5, seed=0):
    rng = np.random.default_rng(seed)
    sides = np.where(rng.random(n) < 0.5, "left", "right")
    recorded = np.where(rng.random(n) < labelled, sides, "")
    photos = pd.DataFrame(
        {"image": [f"p{i}.jpg" for i in range(n)], "split": ["train"] * (n // 2) + ["test"] * (n - n // 2)}
    )
    return photos.assign(viewpoint=recorded), sides


def _embeddings(photos, sides, shows_side: bool, folds=2, dim=16, seed=1):
    """Per fold model a table: the identity content random; where the side shows, the mirrored
    embedding is the plain one with a side-dependent direction reversed (a flank facing the
    other way)."""
    rng = np.random.default_rng(seed)
    facing = np.where(sides == "left", 1.0, -1.0)[:, None] * np.eye(dim)[0] * (1.0 if shows_side else 0.0)
    tables = []
    for _ in range(folds):
        content = rng.normal(size=(len(photos), dim))
        plain, mirrored = content + facing, content - facing + rng.normal(scale=0.3, size=content.shape)
        tables.append(photos[["image", "split"]].assign(embedding=list(plain), embedding_flip=list(mirrored)))
    return tables


def test_a_side_that_shows_is_learned_and_fills_the_photos_without_one():
    photos, sides = _photos()
    features = photo_features(photos, [_embeddings(photos, sides, shows_side=True)])
    table, summary = estimate_viewpoints(photos, features, ScopeSettings(estimate=True))
    unlabelled = (photos["viewpoint"] == "").to_numpy()
    assert summary["accuracy"] >= 0.95 and summary["used"] and summary["estimated"] == unlabelled.sum()
    assert (table.loc[unlabelled, "estimated"] == sides[unlabelled]).mean() >= 0.95
    # Recorded viewpoints stay; the scope's viewpoint is the recorded one, else the estimate.
    assert (table.loc[~unlabelled, "viewpoint"] == photos.loc[~unlabelled, "viewpoint"]).all()
    assert (table.loc[unlabelled, "viewpoint"] == table.loc[unlabelled, "estimated"]).all()
    assert table["probability"].loc[unlabelled].between(0.5, 1).all() and table["probability"][~unlabelled].isna().all()


def test_a_side_that_does_not_show_stays_near_chance_and_is_not_used():
    photos, sides = _photos()
    features = photo_features(photos, [_embeddings(photos, sides, shows_side=False)])
    table, summary = estimate_viewpoints(photos, features, ScopeSettings(estimate=True))
    assert summary["accuracy"] < 0.8 and not summary["used"] and "below 0.95" in summary["reason"]
    assert (table["viewpoint"] == photos["viewpoint"]).all()  # nothing filled
    # The bar is the user's: at 0.3 the same estimate is used.
    _, lenient = estimate_viewpoints(photos, features, ScopeSettings(estimate=True, estimate_min_accuracy=0.3))
    assert lenient["used"] and lenient["accuracy"] == summary["accuracy"]
    # No labels at all: nothing to learn from, said so.
    _, none = estimate_viewpoints(photos.assign(viewpoint=""), features, ScopeSettings(estimate=True))
    assert none["accuracy"] is None and not none["used"] and "too few labelled photos" in none["reason"]


def test_estimates_reach_the_scope_through_the_image_tables(tmp_path):
    photos, sides = _photos(n=80, labelled=0.8)
    tables = _embeddings(photos, sides, shows_side=True)
    train = photos[photos["split"] == "train"].assign(id=[f"w{i // 2}" for i in range(40)], fold=0)
    test = photos[photos["split"] == "test"].drop(columns="viewpoint")  # the test photos have none
    paths = {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"}
    train.to_parquet(paths["train"])
    test.to_parquet(paths["test"])
    embeddings = []
    for k, table in enumerate(tables):
        embeddings.append(tmp_path / f"e{k}.parquet")
        table.to_parquet(embeddings[-1])
    out, summary = tmp_path / "viewpoints.parquet", tmp_path / "summary.json"
    args = ["estimate-viewpoints", "--train", str(paths["train"]), "--test", str(paths["test"])]
    args += ["--embeddings", *map(str, embeddings), "--members", "1", "--params", '{"estimate": true}']
    assert main([*args, "--out", str(out), "--summary", str(summary)]) in (0, None)
    report = json.loads(summary.read_text())
    assert report["used"] and report["labelled"] == int((train["viewpoint"] != "").sum())
    filled_train, filled_test = with_estimated_viewpoints(train, test, out)
    assert (filled_test["viewpoint"] != "").all() and (filled_train["viewpoint"] != "").all()
    recorded = train["viewpoint"] != ""
    assert (filled_train.loc[recorded, "viewpoint"] == train.loc[recorded, "viewpoint"]).all()
    # Without the estimate the test table has no viewpoint column: no viewpoint rule; with it, one.
    assert build_scope(ScopeSettings(), train, test) is None
    assert build_scope(ScopeSettings(), filled_train, filled_test).rules == ["viewpoint"]
    assert with_estimated_viewpoints(train, test, None)[1] is test
