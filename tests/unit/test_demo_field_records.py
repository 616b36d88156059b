"""The demo's field records (knobs metadata, flanks; flukeline.data.demo.field_records): off, the
files are those of before; on, the metadata columns ingest reads, and two differently marked sides."""

import hashlib

import pandas as pd

from flukeline.data.demo.generate import generate_demo
from flukeline.data.metadata import read_metadata

SMALL = {"n_train": 60, "n_test": 20, "max_images_per_id": 8}


def _digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_field_records_leave_the_other_files_alone_and_mark_the_two_sides_differently(tmp_path):
    generate_demo(tmp_path / "plain/kaggle", tmp_path / "plain/truth.csv", preset="tiny", seed=5, overrides=SMALL)
    knobs = {**SMALL, "metadata": True, "flanks": True, "sites": 3}
    generate_demo(tmp_path / "field/kaggle", tmp_path / "field/truth.csv", preset="tiny", seed=5, overrides=knobs)
    plain, field = _digests(tmp_path / "plain"), _digests(tmp_path / "field")
    root = tmp_path / "field" / "kaggle"
    train, test = pd.read_csv(root / "train.csv"), pd.read_csv(root / "test.csv")
    assert list(train.columns) == ["Image", "Id", "encounter", "date", "location", "latitude", "longitude", "viewpoint"]
    assert "Id" not in test.columns and len(test) == SMALL["n_test"]
    # Left-side photos are the plain demo's bytes, right-side ones another pattern.
    for table, split in ((train, "train"), (test, "test")):
        for image, side in zip(table["Image"], table["viewpoint"]):
            assert (plain[f"kaggle/{split}/{image}"] == field[f"kaggle/{split}/{image}"]) == (side == "left")
    assert set(train["viewpoint"]) == {"left", "right"} and set(train["location"]) <= {"site1", "site2", "site3"}
    # Train seasons before the test season; photos of one encounter share day and site.
    assert train["date"].max() < test["date"].min()
    assert train.groupby("encounter")[["date", "location"]].nunique().max().max() == 1
    # The truth and the sample submission are unchanged; ingest's reader accepts every value.
    assert (
        plain["truth.csv"] == field["truth.csv"]
        and plain["kaggle/sample_submission.csv"] == field["kaggle/sample_submission.csv"]
    )
    metadata = read_metadata([root / "test.csv"])
    assert metadata.columns == ["date", "location", "latitude", "longitude", "viewpoint"]
    # Back to the plain knobs in the same folder: the plain files again, test.csv gone.
    generate_demo(root, tmp_path / "field/truth.csv", preset="tiny", seed=5, overrides=SMALL)
    assert _digests(tmp_path / "field") == plain


def test_new_animals_may_have_several_test_photos():
    from collections import Counter

    from flukeline.data.demo.plan import plan_dataset
    from flukeline.data.demo.presets import resolve_config

    plain = plan_dataset(resolve_config("tiny", SMALL), 1)
    grouped = plan_dataset(resolve_config("tiny", {**SMALL, "new_test_photos": 3}), 1)
    new = [i for i in plain if i.split == "test" and i.label == "new_whale"]
    assert max(Counter(i.individual for i in new).values()) == 1
    counts = Counter(i.individual for i in grouped if i.split == "test" and i.label == "new_whale")
    assert sorted(counts.values())[1:] == [3] * (len(counts) - 1) and sum(counts.values()) == len(new)
    # Everything else (names, splits, labels) as without the knob.
    assert [(i.name, i.split, i.label) for i in plain] == [(i.name, i.split, i.label) for i in grouped]
