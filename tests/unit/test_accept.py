"""`flukeline accept` (flukeline.catalogue.accept): the review export read back into a new catalogue
version, its refusals (exact messages, naming the file and line), and the next ingest taking the
catalogue's photos as training rows (flukeline.data.catalogue_rows)."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flukeline.catalogue.accept import accept, fresh_ids
from flukeline.cli import main
from flukeline.core.errors import InputError
from flukeline.data.ingest import ingest


def _photo(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _kaggle_root(folder):
    """A Kaggle-layout root: 4 training photos of w_a / w_b / flk_0003, 5 test photos."""
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    train = {"t1.png": "w_a", "t2.png": "w_a", "t3.png": "w_b", "t4.png": "flk_0003"}
    for i, name in enumerate(train):
        _photo(folder / "train" / name, i)
    for i in range(5):
        _photo(folder / "test" / f"q{i}.png", 100 + i)
    pd.DataFrame({"Image": list(train), "Id": list(train.values())}).to_csv(folder / "train.csv", index=False)
    return folder


def _run(tmp_path, encounters=None):
    """A run's image tables of a Kaggle root (ingest), optionally with test encounters."""
    root = _kaggle_root(tmp_path / "root")
    if encounters is not None:
        pd.DataFrame({"Image": [f"q{i}.png" for i in range(5)], "encounter": encounters}).to_csv(
            root / "sample_submission.csv", index=False
        )
    results = tmp_path / "results"
    ingest(root, results / "train.parquet", results / "test.parquet", results / "rejected.csv", {"folds": 2})
    return root, results / "train.parquet", results / "test.parquet"


def _export(path, rows):
    pd.DataFrame(rows, columns=["Image", "decision", "Id"]).to_csv(path, index=False)
    return path


def test_fresh_ids_count_above_every_flk_number_in_use():
    assert fresh_ids(2, {"w_a", "flk_0003", "flk_12x"}) == ["flk_0004", "flk_0005"]
    assert fresh_ids(1, set()) == ["flk_0001"]


def test_accept_writes_new_versions_and_keeps_the_previous(tmp_path):
    _, train, test = _run(tmp_path)
    catalogue = tmp_path / "catalogue"
    export = _export(
        tmp_path / "review.csv",
        [["q0.png", "match", "w_a"], ["q1.png", "new", "new_whale"], ["q2.png", "unsure", ""], ["q3.png", "new", ""]],
    )
    summary = accept(export, test, train, catalogue)
    first = catalogue / "catalogue-0001.csv"
    assert summary["catalogue"] == str(first) and summary["previous"] is None
    assert (summary["matches"], summary["new_individual_photos"], summary["unsure_skipped"]) == (1, 2, 1)
    # Two new animals (no encounter joins them), numbered above flk_0003 of train.csv.
    assert summary["new_individuals"] == ["flk_0004", "flk_0005"]
    table = pd.read_csv(first, dtype=str, keep_default_na=False)
    assert table[["Image", "Id", "path", "decision"]].values.tolist() == [
        ["q0.png", "w_a", "photos/q0.png", "match"],
        ["q1.png", "flk_0004", "photos/q1.png", "new"],
        ["q3.png", "flk_0005", "photos/q3.png", "new"],
    ]
    for image in ("q0.png", "q1.png", "q3.png"):
        copied, original = catalogue / "photos" / image, tmp_path / "root/test" / image
        assert hashlib.sha1(copied.read_bytes()).digest() == hashlib.sha1(original.read_bytes()).digest()
    before = first.read_bytes()
    # The next accept: version 2 holds version 1's rows and the new ones; version 1 is untouched.
    second = accept(_export(tmp_path / "more.csv", [["q4.png", "match", "flk_0005"]]), test, train, catalogue)
    assert second["previous"] == str(first) and second["rows"] == 4
    assert first.read_bytes() == before
    assert pd.read_csv(catalogue / "catalogue-0002.csv")["Image"].tolist() == ["q0.png", "q1.png", "q3.png", "q4.png"]


def test_photos_of_one_encounter_become_one_new_individual(tmp_path):
    _, train, test = _run(tmp_path, encounters=["day1", "day1", "day2", "", ""])
    summary = accept(
        _export(tmp_path / "review.csv", [["q0.png", "new", "new_whale"], ["q1.png", "new", "new_whale"]]),
        test,
        train,
        tmp_path / "catalogue",
    )
    assert summary["new_individuals"] == ["flk_0004"]
    table = pd.read_csv(tmp_path / "catalogue/catalogue-0001.csv", dtype=str, keep_default_na=False)
    assert table["Id"].tolist() == ["flk_0004", "flk_0004"] and table["encounter"].tolist() == ["day1", "day1"]


def _refusal(tmp_path, rows, encounters=None, catalogue_rows=None):
    _, train, test = _run(tmp_path, encounters)
    catalogue = tmp_path / "catalogue"
    if catalogue_rows:
        accept(_export(tmp_path / "earlier.csv", catalogue_rows), test, train, catalogue)
    with pytest.raises(InputError) as error:
        accept(_export(tmp_path / "review.csv", rows), test, train, catalogue)
    assert not (catalogue / ("catalogue-0002.csv" if catalogue_rows else "catalogue-0001.csv")).exists()
    return str(error.value).splitlines(), test, train


def test_accept_refuses_unknown_and_twice_listed_photos_and_misused_ids(tmp_path):
    lines, test, train = _refusal(
        tmp_path,
        [
            ["nowhere.png", "match", "w_a"],
            ["q0.png", "match", "w_a"],
            ["q0.png", "new", "new_whale"],
            ["q1.png", "new", "w_b"],
            ["q2.png", "match", "w_zzz"],
            ["q3.png", "match", "new_whale"],
            ["q4.png", "maybe", "w_a"],
            ["t1.png", "match", "w_a"],
        ],
    )
    assert lines == [
        f"7 problem(s) in {tmp_path / 'review.csv'}, nothing accepted:",
        f"review.csv line 2: photo 'nowhere.png' is no test photo of this run ({test})",
        "review.csv line 4: photo 'q0.png' is listed twice (first on line 3)",
        f"review.csv line 5: new individual 'w_b' for photo 'q1.png': that id is already used for another animal"
        f" (in {train})",
        f"review.csv line 6: match for photo 'q2.png' names 'w_zzz', which is no known individual"
        f" (not in {train} nor the catalogue)",
        "review.csv line 7: match for photo 'q3.png' names no individual (Id 'new_whale')",
        "review.csv line 8: decision 'maybe' for photo 'q4.png' is none of match, new, unsure",
        f"review.csv line 9: photo 't1.png' is no test photo of this run ({test})",
    ]


def test_accept_refuses_a_photo_already_in_the_catalogue_and_an_id_the_catalogue_uses(tmp_path):
    lines, _, _ = _refusal(
        tmp_path,
        [["q0.png", "match", "w_b"], ["q2.png", "new", "flk_0004"]],
        catalogue_rows=[["q0.png", "match", "w_a"], ["q1.png", "new", "new_whale"]],
    )
    assert lines[1:] == [
        "review.csv line 2: photo 'q0.png' is already in the catalogue (catalogue-0001.csv line 2, as w_a)",
        "review.csv line 3: new individual 'flk_0004' for photo 'q2.png': that id is already used for another"
        " animal (in the catalogue)",
    ]


def test_accept_refuses_two_individuals_in_one_encounter_and_a_changed_photo(tmp_path):
    lines, test, _ = _refusal(
        tmp_path, [["q0.png", "match", "w_a"], ["q1.png", "match", "w_b"]], encounters=["day1", "day1", "", "", ""]
    )
    assert lines[1:] == [
        "review.csv line 3: photo 'q1.png' shares encounter 'day1' with 'q0.png' (review.csv line 2) but is given"
        " another individual (w_b vs w_a)"
    ]
    _photo(tmp_path / "root/test/q2.png", 999)  # replaced after the run read it
    with pytest.raises(InputError) as error:
        accept(
            _export(tmp_path / "r2.csv", [["q2.png", "match", "w_a"]]),
            test,
            tmp_path / "results/train.parquet",
            tmp_path / "catalogue",
        )
    photo = (tmp_path / "root/test/q2.png").resolve()
    assert str(error.value).splitlines()[1] == (
        f"r2.csv line 2: photo 'q2.png' at {photo} has changed since this run read it (sha1 differs)"
    )


def test_accept_command_reports_a_refusal_in_one_message(tmp_path, capsys):
    _, train, test = _run(tmp_path)
    export = _export(tmp_path / "review.csv", [["q2.png", "unsure", ""]])
    code = main(
        [
            "accept",
            "--decisions",
            str(export),
            "--test",
            str(test),
            "--train",
            str(train),
            "--catalogue",
            str(tmp_path / "catalogue"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"flukeline accept: error: {export}: no confirmed match or new individual to accept (only unsure rows, or none)"
    )


def _ingest_next_batch(root, catalogue, out):
    """The next batch's ingest of the Kaggle root into out/, the catalogue's first version as training rows."""
    return ingest(
        root,
        out / "train.parquet",
        out / "test.parquet",
        out / "rejected.csv",
        {"folds": 2},
        catalogue=catalogue / "catalogue-0001.csv",
    )


def test_the_next_ingest_trains_on_the_catalogue(tmp_path):
    root, train, test = _run(tmp_path, encounters=["day1", "day1", "", "", ""])
    catalogue = tmp_path / "catalogue"
    accept(
        _export(
            tmp_path / "review.csv", [["q0.png", "new", "new_whale"], ["q1.png", "new", ""], ["q2.png", "match", "w_b"]]
        ),
        test,
        train,
        catalogue,
    )
    # The next batch: the reviewed photos leave test/ (their copies live in the catalogue).
    for image in ("q0.png", "q1.png", "q2.png"):
        (root / "test" / image).unlink()
    (root / "sample_submission.csv").unlink()
    out = tmp_path / "next"
    _ingest_next_batch(root, catalogue, out)
    trained = pd.read_parquet(out / "train.parquet").set_index("image")
    assert trained.loc[["q0.png", "q1.png", "q2.png"], "id"].tolist() == ["flk_0004", "flk_0004", "w_b"]
    assert trained.loc["q0.png", "path"] == str((catalogue / "photos/q0.png").resolve())
    assert trained.loc["q0.png", "encounter"] == "day1" and trained.loc["t1.png", "encounter"] == ""
    assert sorted(pd.read_parquet(out / "test.parquet")["image"]) == ["q3.png", "q4.png"]


def test_ingest_refuses_a_catalogue_photo_still_in_the_test_set_naming_its_line(tmp_path):
    root, train, test = _run(tmp_path)
    catalogue = tmp_path / "catalogue"
    accept(_export(tmp_path / "review.csv", [["q0.png", "match", "w_a"]]), test, train, catalogue)
    out = tmp_path / "next"
    with pytest.raises(InputError, match=r"catalogue-0001\.csv line 2: image 'q0\.png' is also listed in the test set"):
        _ingest_next_batch(root, catalogue, out)


def test_accepted_photos_become_gallery_sightings_that_identify_finds(tmp_path):
    from flukeline.gallery.identify import identify
    from flukeline.gallery.manifest import new_gallery

    _, train, test = _run(tmp_path)
    gallery = tmp_path / "gallery"
    new_gallery(gallery, "mobilenetv2_100", "imagenet", "64x64", 0.5)
    export = _export(tmp_path / "decisions.csv", [["q0.png", "new", ""], ["q1.png", "match", "w_a"]])
    summary = accept(export, test, train, tmp_path / "catalogue", gallery_dir=gallery)
    assert summary["gallery_sightings"] == 2
    # Without retraining, the accepted photo is found as its new individual (its own copy).
    results = identify(gallery, [tmp_path / "root" / "test" / "q0.png"])
    top = results[results["rank"] == 1]
    assert top["id"].tolist() == summary["new_individuals"] and top["similarity"].iloc[0] > 0.99
