"""The Omniglot source (real handwritten characters in the Kaggle layout) and the raw-pixel baseline."""

import json
import re
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE, map_at_k
from flukeline.data.ingest import ingest
from flukeline.data.omniglot import DEFAULTS, convert_omniglot, plan_split, read_archive, sources_path
from flukeline.evaluate.pixel_baseline import raw_pixel_1nn, score, with_new_whale

ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
PRESET = REPO / "workflow" / "presets" / "omniglot.yaml"
needs_zip = pytest.mark.skipif(not ZIP.is_file(), reason=f"{ZIP} not present")


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


def _blob(seed, size=24):
    """A random binary pattern: distinct identities are nearly uncorrelated."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((size, size)) < 0.3, 0, 255).astype(np.uint8)


def _noisy(image, seed, flips=10):
    rng = np.random.default_rng(seed)
    out = image.copy()
    idx = rng.choice(out.size, flips, replace=False)
    out.flat[idx] = 255 - out.flat[idx]
    return out


def test_raw_pixel_1nn_scores_a_constructed_case():
    a, b, c, unknown = _blob(1), _blob(2), _blob(3), _blob(4)
    train = pd.DataFrame({
        "id": ["A", "A", "B", "C", NEW_WHALE],
        "pixels": [a, _noisy(a, 1), b, c, _blob(5)],
    })
    test = pd.DataFrame({"image": ["qa", "qb", "qnew"], "pixels": [_noisy(a, 2), _noisy(b, 3), unknown]})
    predictions, info = raw_pixel_1nn(train, test, size=24, threshold=0.6)
    ranked = dict(zip(predictions["image"], predictions["predicted"].str.split()))
    assert ranked["qa"][:2] == ["A", NEW_WHALE] and ranked["qb"][:2] == ["B", NEW_WHALE]
    assert ranked["qnew"][0] == NEW_WHALE and sorted(ranked["qnew"][1:4]) == ["A", "B", "C"]
    assert all(len(r) == 4 for r in ranked.values())  # padded to every identity + new_whale (< k here)
    truth = pd.DataFrame({"Image": ["qa", "qb", "qnew"], "Id": ["A", "B", NEW_WHALE]})
    assert score(predictions, truth) == 1.0
    # Wrong truth for qb: B ranks first, the truth C is among the rest of the identities.
    wrong = truth.assign(Id=["A", "C", NEW_WHALE])
    rank_c = ranked["qb"].index("C") + 1
    assert score(predictions, wrong) == pytest.approx((1 + 1 / rank_c + 1) / 3)
    assert info["n_gallery"] == 4 and info["threshold_from"] == "fixed"
    # Leave-one-out on train: A's two images find each other (similar), B and C are singletons
    # (truth new_whale) and the new_whale image too; a threshold separating them scores 1.
    _, info = raw_pixel_1nn(train, test, size=24, threshold="loo")
    assert info["loo_map5"] == 1.0 and -1 < info["threshold"] < 1


def test_with_new_whale_inserts_before_the_first_weak_candidate():
    candidates = [("A", 0.9), ("B", 0.7), ("C", 0.2)]
    assert with_new_whale(candidates, 0.8) == ["A", NEW_WHALE, "B", "C"]
    assert with_new_whale(candidates, 0.95) == [NEW_WHALE, "A", "B", "C"]
    assert with_new_whale(candidates, 0.1) == ["A", "B", "C", NEW_WHALE]
    assert map_at_k(["B"], [with_new_whale(candidates, 0.8)]) == pytest.approx(1 / 3)


def test_pixel_baseline_cli_on_a_kaggle_root(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i, (label, seed) in enumerate([("A", 1), ("A", 1), ("B", 2), ("C", 3)]):
        cv2.imwrite(str(root / "train" / f"t{i}.png"), _noisy(_blob(seed), 10 + i))
        rows.append((f"t{i}.png", label))
    pd.DataFrame(rows, columns=["Image", "Id"]).to_csv(root / "train.csv", index=False)
    cv2.imwrite(str(root / "test" / "q0.png"), _noisy(_blob(2), 20))
    cv2.imwrite(str(root / "test" / "q1.png"), _blob(9))
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"Image": ["q0.png", "q1.png"], "Id": ["B", NEW_WHALE]}).to_csv(truth, index=False)
    result = subprocess.run(
        [sys.executable, "-m", "flukeline", "pixel-baseline", "--root", str(root), "--truth", str(truth),
         "--size", "24", "--threshold", "0.6", "--out", str(tmp_path / "scores.json"),
         "--predictions", str(tmp_path / "predictions.csv")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["test_map5"] == 1.0
    # all-new_whale: new_whale, A, then B and C (ties by name): q0 (B) at rank 3, q1 at rank 1.
    assert scores["all_new_whale_test_map5"] == pytest.approx((1 / 3 + 1) / 2)
    assert pd.read_csv(tmp_path / "predictions.csv")["Image"].tolist() == ["q0.png", "q1.png"]


@needs_zip
def test_preset_plans_the_omniglot_dag_and_only_evaluate_reads_the_truth(tmp_path):
    result = snakemake(tmp_path, "-n", "--forceall", "--printshellcmds", "--cores", "1", configfiles=(PRESET,))
    out = result.stdout
    for rule in ("omniglot_dataset", "ingest", "detect", "align_transforms", "align_crops", "train_member", "match_member", "evaluate"):
        assert f"rule {rule}:" in out, rule
    assert "detect_train" not in out and "demo_dataset" not in out
    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    touching = sorted({re.match(r"(?:local)?rule (\w+):", j).group(1) for j in jobs
                       if "test_truth.csv" in j and re.match(r"(?:local)?rule \w+:", j)})
    assert touching == ["evaluate", "omniglot_dataset"], touching
    command = next(line for line in out.splitlines() if " omniglot --zip " in line)
    assert str(ZIP.resolve()) in command


def test_config_errors_name_the_zip_and_the_way_out(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"data": {"omniglot": {"zip": "nowhere/omniglot.zip"}}}))
    result = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(PRESET, override), check=False)
    assert result.returncode != 0
    assert "nowhere/omniglot.zip" in result.stdout + result.stderr
    # Default detect.method learned; a stand-in zip so that this check is reached without the data.
    stand_in = tmp_path / "stand_in.zip"
    stand_in.write_bytes(b"")
    override.write_text(yaml.safe_dump({"data": {"source": "omniglot", "omniglot": {"zip": str(stand_in)}}}))
    result = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(override,), check=False)
    assert result.returncode != 0
    assert "detect.method: none" in result.stdout + result.stderr
