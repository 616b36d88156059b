"""data.new_label: a user's CSV may call an unknown animal by its own word (e.g. `unknown`);
inside the workflow and in submission.csv it is Kaggle's new_whale, and the annotation page shows
people "new individual", never the token."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from helpers_messy_inputs import noise_jpeg, write_layout

from flukeline.annotate.page import run as annotate
from flukeline.core.errors import InputError
from flukeline.data.ingest import ingest
from flukeline.data.settings import IngestSettings

CSV = "Image,Id\na1.jpg,w_a\na2.jpg,w_a\nn1.jpg,unknown\nn2.jpg, unknown\nk1.jpg,new_whale\n"
FILES = {name: noise_jpeg(40 + i) for i, name in enumerate(["n2.jpg", "k1.jpg"])}


def run_ingest(root, **settings):
    out = root.parent / "out"
    ingest(
        root,
        out / "train.parquet",
        out / "test.parquet",
        out / "rejected.csv",
        {"folds": 2, "min_image_side": 0, **settings},
    )
    return pd.read_parquet(out / "train.parquet").set_index("image")


def test_the_users_word_for_unknown_becomes_new_whale(tmp_path):
    root = write_layout(tmp_path / "data", [], FILES, csv_text=CSV)
    train = run_ingest(root, new_label="unknown")
    # Kaggle's own word is understood too; the user's word never reaches the tables.
    assert train["id"].to_dict() == {
        "a1.jpg": "w_a",
        "a2.jpg": "w_a",
        "n1.jpg": "new_whale",
        "n2.jpg": "new_whale",
        "k1.jpg": "new_whale",
    }
    assert set(train["original_id"]) == {"w_a", "new_whale"}


def test_without_the_setting_unknown_is_an_identity_like_any_other(tmp_path):
    root = write_layout(tmp_path / "data", [], FILES, csv_text=CSV)
    assert run_ingest(root).loc["n1.jpg", "id"] == "unknown"


def test_only_unknown_animals_are_named_in_the_users_word(tmp_path):
    csv = "Image,Id\na1.jpg,unknown\na2.jpg,unknown\nn1.jpg,unknown\n"
    root = write_layout(tmp_path / "data", [], {}, csv_text=csv)
    with pytest.raises(InputError, match=r"all 3 usable training row\(s\) have Id 'unknown' \(or 'new_whale'\);"):
        run_ingest(root, new_label="unknown")


def test_new_label_must_be_a_word_a_csv_cell_can_hold():
    with pytest.raises(InputError, match="new_label must be a non-empty word"):
        IngestSettings(new_label=" ")
    with pytest.raises(InputError, match="new_label must be a non-empty word"):
        IngestSettings(new_label="a,b")


def test_the_annotation_page_shows_new_individual_not_the_token(tmp_path):
    root = write_layout(tmp_path / "data", [], FILES, csv_text=CSV)
    out = tmp_path / "annotate.html"
    annotate(root=root, keypoints="left_tip,notch", out=out, n=5, display=64, threads=1, new_label="unknown")
    text = out.read_text(encoding="utf-8")
    photos = json.loads(re.search(r'<script id="annotate-data" type="application/json">(.*?)</script>', text, re.S)[1])[
        "photos"
    ]
    labels = {photo["image"]: photo["label"] for photo in photos}
    assert labels == {
        "a1.jpg": "identity w_a",
        "a2.jpg": "identity w_a",
        "n1.jpg": "new individual",
        "n2.jpg": "new individual",
        "k1.jpg": "new individual",
    }
    assert "photo.label" in text and '"identity " + photo.id' not in text
