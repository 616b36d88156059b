"""`flukeline init` (flukeline.data.init) on tiny generated folders: a folder with one subfolder per
individual converted into the Kaggle layout, a Kaggle layout read in place, the summary's numbers,
the suggestions, and a config file that passes the workflow's schema."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers_messy_inputs import noise_jpeg, write_layout
from PIL import Image

from flukeline.core.config_check import config_problems
from flukeline.core.errors import InputError
from flukeline.data.init import init_folder

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def merged(base: dict, over: dict) -> dict:
    """config.yaml under a --configfile, as Snakemake merges them (nested keys replaced one by one)."""
    for key, value in over.items():
        base[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def gray_jpeg(size=(60, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, size[::-1], dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def per_individual_folder(tmp_path) -> Path:
    """Big Bertha (3 photos: one a byte copy of another), w2 (1 grayscale), unknown (1), test/ (2)."""
    folder = tmp_path / "field"
    photos = {
        "Big Bertha/a.jpg": noise_jpeg(1, (60, 60)),
        "Big Bertha/b.jpg": noise_jpeg(2, (60, 60)),
        "Big Bertha/c.jpg": noise_jpeg(1, (60, 60)),
        "w2/a.jpg": gray_jpeg(),
        "unknown/x.jpg": noise_jpeg(3, (60, 60)),
        "test/q1.jpg": noise_jpeg(4, (60, 60)),
        "test/q2.jpg": noise_jpeg(5, (60, 60)),
        "w2/notes.txt": b"not a photo",
    }
    for name, data in photos.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_folder_per_individual_becomes_a_kaggle_layout_and_a_config(tmp_path):
    lines = []
    config = tmp_path / "mine.yaml"
    summary = init_folder(
        per_individual_folder(tmp_path), config=config, new_label="unknown", echo=lines.append, threads=1
    )
    root = tmp_path / "field-kaggle"
    train = pd.read_csv(root / "train.csv")
    assert train.to_dict("records") == [
        {"Image": "Big_Bertha-a.jpg", "Id": "Big_Bertha"},
        {"Image": "Big_Bertha-b.jpg", "Id": "Big_Bertha"},
        {"Image": "Big_Bertha-c.jpg", "Id": "Big_Bertha"},
        {"Image": "new_whale-x.jpg", "Id": "new_whale"},
        {"Image": "w2-a.jpg", "Id": "w2"},
    ]
    assert sorted(p.name for p in (root / "test").iterdir()) == ["q1.jpg", "q2.jpg"]
    assert (summary["identities"], summary["train_photos"], summary["test_photos"]) == (2, 5, 2)
    assert summary["photos_per_identity"]["1"] == 1 and summary["photos_per_identity"]["3"] == 1
    assert summary["unknown_share"] == 0.2 and summary["grayscale_share"] == round(1 / 7, 3)
    assert summary["duplicates"]["examples"] == [["train/Big_Bertha-a.jpg", "train/Big_Bertha-c.jpg"]]
    assert "  subfolder 'Big Bertha' is Id 'Big_Bertha'" in lines
    assert "identities: 2 (1 with 2 or more photos)" in lines
    # Square photos, no annotations: the face preset, merged into one file that runs as is.
    assert summary["preset"] == "face"
    assert "  detect.method: none: no annotations: the whole photo is the box (README, Your own data, step 1)" in lines
    written = yaml.safe_load(config.read_text())
    assert written["data"] == {"source": "kaggle", "root": str(root), "folds": 2}
    assert written["align"]["sizes"] == [[224, 224]] and written["detect"]["method"] == "none"
    assert config_problems(merged(yaml.safe_load((REPO / "config.yaml").read_text()), written), SCHEMA) == []
    assert config.read_text().startswith("# Written by `flukeline init ")


def test_a_kaggle_layout_is_read_in_place_with_its_own_word_for_unknown(tmp_path):
    csv = "Image,Id\na1.jpg,w_a\na2.jpg,w_a\nn1.jpg,Unknown\n"
    root = write_layout(tmp_path / "data", [], {}, csv_text=csv)
    config = tmp_path / "c.yaml"
    lines = []
    summary = init_folder(root, config=config, echo=lines.append, threads=1)
    assert summary["root"] == str(root.resolve()) and not (tmp_path / "data-kaggle").exists()
    assert summary["unknown_label"] == "Unknown" and summary["unknown_share"] == round(1 / 3, 3)
    assert yaml.safe_load(config.read_text())["data"]["new_label"] == "Unknown"
    assert "  data.new_label: Unknown: train.csv calls unknown animals so" in lines
    # 40x30 photos (aspect 1.33): the 3:2 fin preset, and too few photos for annotations to pay.
    assert summary["preset"] == "fin"
    assert any(line.startswith("  annotations: not yet: 3 training photos are too few") for line in lines)


def test_init_never_overwrites_and_names_a_folder_it_cannot_read(tmp_path):
    folder = per_individual_folder(tmp_path)
    (tmp_path / "field-kaggle").mkdir()
    with pytest.raises(InputError, match=r"field-kaggle exists already: give another --out"):
        init_folder(folder, config=tmp_path / "c.yaml", echo=lambda line: None)
    (tmp_path / "c.yaml").write_text("mine")
    with pytest.raises(InputError, match=r"c.yaml exists already: give another --config, or --force"):
        init_folder(folder, out=tmp_path / "other", config=tmp_path / "c.yaml", echo=lambda line: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty is neither a Kaggle layout .* nor a folder with one subfolder"):
        init_folder(tmp_path / "empty", echo=lambda line: None)
