"""The Omniglot source: real handwritten characters converted to the Kaggle layout (identities,
drawers, the truth outside the data root, a deterministic split) and the archive checks. The preset's
dry runs are in tests/workflow/test_omniglot.py; the raw-pixel baseline in tests/unit/test_pixel_baseline.py."""

import re
import zipfile

import pandas as pd
import pytest
from helpers_omniglot import ZIP, needs_zip

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.ingest import ingest
from flukeline.data.omniglot import DEFAULTS, convert_omniglot, plan_split, read_archive, sources_path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("omniglot")
    summary = convert_omniglot(ZIP, base / "kaggle", base / "truth.csv", seed=0)
    return base, summary


def _tables(base):
    train = pd.read_csv(base / "kaggle" / "train.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(base / "truth.csv", dtype=str, keep_default_na=False)
    sources = pd.read_csv(sources_path(base / "truth.csv"), dtype={"Image": str, "Id": str}, keep_default_na=False)
    return train, truth, sources


@needs_zip
def test_conversion_counts_and_layout(converted):
    base, summary = converted
    train, truth, sources = _tables(base)
    # 136 characters, every 4th new; known: 4-6 train + 2 test drawers; new: 2 + 2.
    assert summary["n_characters_in_archive"] == summary["n_characters_used"] == 136
    assert (summary["n_known_characters"], summary["n_new_characters"]) == (102, 34)
    assert summary["n_test"] == len(truth) == 102 * 2 + 34 * 2
    assert summary["n_test_new_whale"] == (truth["Id"] == NEW_WHALE).sum() == 68
    assert summary["n_train_new_whale"] == (train["Id"] == NEW_WHALE).sum() == 68
    assert summary["n_train"] + summary["n_test"] <= DEFAULTS["max_images"]
    per_id = train.loc[train["Id"] != NEW_WHALE, "Id"].value_counts()
    assert len(per_id) == 102 and per_id.between(4, 6).all() and per_id.nunique() == 3
    # Every listed image is a file of its split, named opaquely; nothing else is in the folders.
    assert sorted(p.name for p in (base / "kaggle" / "train").iterdir()) == sorted(train["Image"])
    assert sorted(p.name for p in (base / "kaggle" / "test").iterdir()) == sorted(truth["Image"])
    assert all(re.fullmatch(r"[0-9a-f]{9}\.png", n) for n in sources["Image"])
    assert sources["Image"].is_unique
    sample = pd.read_csv(base / "kaggle" / "sample_submission.csv")
    assert sample["Image"].tolist() == sorted(truth["Image"])


@needs_zip
def test_characters_are_known_or_new_whole_and_drawers_never_repeat(converted):
    base, _ = converted
    _, _, sources = _tables(base)
    for character, rows in sources.groupby("character"):
        labels = set(rows["Id"])
        assert labels in ({character}, {NEW_WHALE}), (character, labels)
        train_drawers = set(rows.loc[rows["split"] == "train", "drawer"])
        test_drawers = set(rows.loc[rows["split"] == "test", "drawer"])
        assert not train_drawers & test_drawers, character
        assert rows["drawer"].is_unique
        if labels == {character}:
            assert len(train_drawers) >= 4 and len(test_drawers) == 2
        else:
            assert len(train_drawers) == len(test_drawers) == 2


@needs_zip
def test_truth_lies_outside_the_data_root_and_the_images_are_the_archives(converted):
    base, _ = converted
    root = (base / "kaggle").resolve()
    for path in (base / "truth.csv", sources_path(base / "truth.csv")):
        assert not path.resolve().is_relative_to(root)
    assert not any("truth" in p.name or "sources" in p.name for p in root.rglob("*"))
    _, truth, sources = _tables(base)
    row = sources.iloc[0]
    with zipfile.ZipFile(ZIP) as archive:
        assert (root / row["split"] / row["Image"]).read_bytes() == archive.read(row["member"])
    with pytest.raises(InputError, match="outside the data root"):
        convert_omniglot(ZIP, base / "kaggle", base / "kaggle" / "truth.csv")


@needs_zip
def test_ingest_reads_the_converted_root(converted, tmp_path):
    base, summary = converted
    out = ingest(base / "kaggle", tmp_path / "train.parquet", tmp_path / "test.parquet", tmp_path / "rejected.csv")
    assert (out["n_train"], out["n_test"], out["n_rejected"]) == (summary["n_train"], summary["n_test"], 0)
    assert out["grayscale_share"] == 1.0


@needs_zip
def test_split_is_deterministic_for_a_seed_and_the_cap_keeps_a_prefix(converted, tmp_path):
    base, summary = converted
    again = convert_omniglot(ZIP, tmp_path / "kaggle", tmp_path / "truth.csv", seed=0)
    assert {k: v for k, v in again.items() if k != "archive"} == {k: v for k, v in summary.items() if k != "archive"}
    for name in ("kaggle/train.csv", "kaggle/sample_submission.csv", "truth.csv", "truth_sources.csv"):
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes(), name
    characters = read_archive(ZIP)
    plan0, plan1 = plan_split(characters, seed=0), plan_split(characters, seed=1)
    assert [(i.character, i.split, i.drawer) for i in plan0] != [(i.character, i.split, i.drawer) for i in plan1]
    capped = plan_split(characters, {"max_images": 200}, seed=0)
    assert 190 <= len(capped) <= 200
    full = {(i.character, i.split, i.drawer, i.label) for i in plan0}
    assert {(i.character, i.split, i.drawer, i.label) for i in capped} <= full
    assert sum(i.label == NEW_WHALE and i.split == "test" for i in capped) > 0


def _zip(path, names):
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, b"\x89PNG")
    return path


def test_bad_archives_are_named(tmp_path):
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(InputError, match=re.escape(str(missing))):
        read_archive(missing)
    not_zip = tmp_path / "text.zip"
    not_zip.write_text("hello")
    with pytest.raises(InputError, match=re.escape(str(not_zip)) + ".*not a readable zip"):
        read_archive(not_zip)
    odd = _zip(tmp_path / "odd.zip", ["top/Latin/character01/0001_01.png", "top/Latin/readme.txt"])
    with pytest.raises(InputError) as error:
        read_archive(odd)
    assert "'top/Latin/readme.txt'" in str(error.value) and str(odd) in str(error.value)
    assert "<top folder>/<alphabet>/<characterNN>/<id>_<drawer>.png" in str(error.value)
    few = _zip(tmp_path / "few.zip", [f"top/Latin/character01/0001_{d:02d}.png" for d in range(1, 6)])
    with pytest.raises(InputError, match=r"fewer drawers.*Latin_character01 \(5\)"):
        plan_split(read_archive(few))
