import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flukeline.core.errors import InputError
from flukeline.core.folds import ALWAYS_TRAIN
from flukeline.core.images import is_grayscale, read_image_rgb
from flukeline.core.io import write_json_atomic, write_parquet_atomic
from flukeline.data.ingest import ingest
from flukeline.data.settings import IngestSettings

TRAIN_COLUMNS = [
    "image",
    "path",
    "id",
    "original_id",
    "width",
    "height",
    "grayscale",
    "sha1",
    "fold",
    "split",
    "mask_path",
]
TEST_COLUMNS = ["image", "path", "width", "height", "grayscale", "sha1", "split", "mask_path"]


# --- image makers --------------------------------------------------------------------------------


def colour_jpeg(seed: int, size=(40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def grey_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((32, 24)).save(buffer, "JPEG")
    return buffer.getvalue()


def alpha_png() -> bytes:
    image = Image.new("RGBA", (24, 16), (200, 30, 40, 128))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 high; EXIF orientation 6 says: display rotated, 20 wide x 40 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 120, 250)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = colour_jpeg(99, size=(64, 64))
    return data[: len(data) // 2]


# --- layout --------------------------------------------------------------------------------------


def make_layout(
    root: Path,
    train: list[tuple[str, str]],
    train_files: dict[str, bytes],
    test_files: dict[str, bytes],
    submission: list[str] | None = None,
    train_csv_text: str | None = None,
) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for name, data in train_files.items():
        (root / "train" / name).write_bytes(data)
    for name, data in test_files.items():
        (root / "test" / name).write_bytes(data)
    if train_csv_text is None:
        train_csv_text = "Image,Id\n" + "".join(f"{image},{label}\n" for image, label in train)
    (root / "train.csv").write_text(train_csv_text)
    if submission is not None:
        pd.DataFrame({"Image": submission, "Id": "new_whale w_1"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def good_layout(root: Path, submission: list[str] | None = None) -> Path:
    train = [
        ("a1.jpg", "w_a"),
        ("a2.jpg", "w_a"),
        ("a3.jpg", "w_a"),
        ("grey.jpg", "w_b"),
        ("b2.jpg", "w_b"),
        ("alpha.png", "new_whale"),
        ("n2.jpg", "new_whale"),
        ("rot.jpg", "w_single"),
    ]
    files = {
        "a1.jpg": colour_jpeg(1),
        "a2.jpg": colour_jpeg(2),
        "a3.jpg": colour_jpeg(3),
        "grey.jpg": grey_jpeg(),
        "b2.jpg": colour_jpeg(4),
        "alpha.png": alpha_png(),
        "n2.jpg": colour_jpeg(5),
        "rot.jpg": rotated_jpeg(),
    }
    test = {"t2.JPG": colour_jpeg(6), "t1.jpeg": colour_jpeg(7), "t3.png": alpha_png(), "notes.txt": b"x"}
    return make_layout(root, train, files, test, submission)


def run(root: Path, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """ingest with `kwargs`: data.* settings (IngestSettings' fields) and ingest's own keywords."""
    out = root.parent / "out"
    # min_image_side 0: the test photos are tiny on purpose (test_ingest_hygiene checks the limit).
    settings = {"min_image_side": 0, **{key: kwargs.pop(key) for key in IngestSettings.keys() if key in kwargs}}
    summary = ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", settings, **kwargs)
    return (
        pd.read_parquet(out / "train.parquet"),
        pd.read_parquet(out / "test.parquet"),
        pd.read_csv(out / "rejected.csv", keep_default_na=False),
        summary,
    )


# --- good data -----------------------------------------------------------------------------------


def test_tables_from_a_good_layout(tmp_path):
    root = good_layout(tmp_path / "data")
    train, test, rejected, summary = run(root, folds=2, seed=1)

    assert list(train.columns) == TRAIN_COLUMNS
    assert list(test.columns) == TEST_COLUMNS
    # Without annotations: no masks, and empty annotation tables with their columns.
    assert train["mask_path"].isna().all() and test["mask_path"].isna().all()
    out = tmp_path / "out"
    assert pd.read_parquet(out / "keypoints.parquet").columns.tolist() == ["image", "keypoint", "x", "y", "visible"]
    assert len(pd.read_parquet(out / "boxes.parquet")) == 0
    assert train["image"].tolist() == [
        "a1.jpg",
        "a2.jpg",
        "a3.jpg",
        "grey.jpg",
        "b2.jpg",
        "alpha.png",
        "n2.jpg",
        "rot.jpg",
    ]
    assert test["image"].tolist() == ["t1.jpeg", "t2.JPG", "t3.png"]  # sorted, case-insensitive suffixes
    assert set(train["split"]) == {"train"} and set(test["split"]) == {"test"}
    assert rejected.empty and list(rejected.columns) == ["split", "image", "problem"]

    for table in (train, test):
        for image, path, sha1 in zip(table["image"], table["path"], table["sha1"]):
            assert Path(path).is_absolute() and Path(path) == Path(path).resolve()
            assert Path(path).name == image
            assert sha1 == hashlib.sha1(Path(path).read_bytes()).hexdigest()

    by_image = train.set_index("image")
    assert (by_image.loc["a1.jpg", "width"], by_image.loc["a1.jpg", "height"]) == (40, 30)
    assert (by_image.loc["rot.jpg", "width"], by_image.loc["rot.jpg", "height"]) == (20, 40)
    assert (by_image.loc["alpha.png", "width"], by_image.loc["alpha.png", "height"]) == (24, 16)
    assert train["grayscale"].tolist() == [False, False, False, True, False, False, False, False]
    assert train["width"].dtype == np.int64 and train["grayscale"].dtype == bool

    assert by_image.loc["rot.jpg", "fold"] == ALWAYS_TRAIN  # single-image identity
    assert len(set(by_image.loc[["a1.jpg", "a2.jpg", "a3.jpg"], "fold"])) == 2
    assert set(by_image.loc[["grey.jpg", "b2.jpg"], "fold"]) == {0, 1}
    assert set(by_image.loc[["alpha.png", "n2.jpg"], "fold"]) == {0, 1}

    assert summary == {
        "n_train": 8,
        "n_test": 3,
        "n_rejected": 0,
        "n_identities": 3,
        "n_single_image_identities": 1,
        "new_whale_share": 0.25,
        "grayscale_share": pytest.approx(1 / 11),
        "fold_sizes": [int((train["fold"] == 0).sum()), int((train["fold"] == 1).sum())],
        "n_always_train": 1,
        # The layout's test t3.png is a byte copy of the training alpha.png (issue 24: a leak).
        "n_duplicate_groups": 1,
        "n_duplicate_images": 2,
        "n_exact_duplicate_groups": 1,
        "n_near_duplicate_groups": 0,
        "n_conflicting_id_groups": 0,
        "n_leaked_test_images": 1,
        # data.group_duplicate_ids and group_new_whale_duplicates are off: no training id of its own.
        "n_merged_training_ids": 0,
        "n_merged_original_ids": 0,
        "n_new_whale_training_ids": 0,
        "n_new_whale_images_grouped": 0,
    }
    assert sorted(summary["fold_sizes"]) == [3, 4]
    assert train["original_id"].tolist() == train["id"].tolist()
    assert pd.read_csv(out / "id_groups.csv").columns.tolist() == [
        "training_id",
        "original_id",
        "n_images",
        "groups",
        "reason",
    ]


def test_sample_submission_sets_test_order(tmp_path, caplog):
    root = good_layout(tmp_path / "data", submission=["t3.png", "t2.JPG"])
    with caplog.at_level(logging.WARNING):
        _, test, _, _ = run(root)
    assert test["image"].tolist() == ["t3.png", "t2.JPG"]
    assert "1 image(s)" in caplog.text and "not listed" in caplog.text  # t1.jpeg


def test_sorted_test_order_ignores_sample_submission(tmp_path):
    root = good_layout(tmp_path / "data", submission=["t3.png", "t2.JPG"])
    _, test, _, _ = run(root, test_order="sorted")
    assert test["image"].tolist() == ["t1.jpeg", "t2.JPG", "t3.png"]


def test_required_sample_submission_must_exist(tmp_path):
    root = good_layout(tmp_path / "data")
    with pytest.raises(InputError, match="sample_submission.csv does not exist"):
        run(root, test_order="sample_submission")


def test_results_do_not_depend_on_threads(tmp_path):
    train_1, test_1, _, _ = run(good_layout(tmp_path / "one" / "data"), threads=1)
    train_2, test_2, _, _ = run(good_layout(tmp_path / "two" / "data"), threads=2)
    columns = ["image", "id", "width", "height", "grayscale", "sha1", "fold"]
    pd.testing.assert_frame_equal(train_1[columns], train_2[columns])
    pd.testing.assert_frame_equal(test_1.drop(columns="path"), test_2.drop(columns="path"))


def test_unknown_columns_are_ignored_with_a_warning(tmp_path, caplog):
    root = good_layout(tmp_path / "data")
    table = pd.read_csv(root / "train.csv")
    table["photographer"] = "someone"
    table.to_csv(root / "train.csv", index=False)
    with caplog.at_level(logging.WARNING):
        train, _, _, _ = run(root)
    assert "photographer" in caplog.text and "train.csv" in caplog.text
    assert "photographer" not in train.columns


def test_ids_are_read_verbatim(tmp_path):
    # "NA" and "null" are real labels here, not missing values.
    root = make_layout(
        tmp_path / "data",
        [("a.jpg", "NA"), ("b.jpg", "NA"), ("c.jpg", "null")],
        {"a.jpg": colour_jpeg(1), "b.jpg": colour_jpeg(2), "c.jpg": colour_jpeg(3)},
        {"t.jpg": colour_jpeg(4)},
    )
    train, _, _, _ = run(root)
    assert train["id"].tolist() == ["NA", "NA", "null"]


# --- bad rows ------------------------------------------------------------------------------------


def bad_layout(root: Path) -> Path:
    outside = root.parent / "outside.jpg"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(colour_jpeg(50))
    train = [
        ("good1.jpg", "w_a"),  # line 2
        ("missing.jpg", "w_a"),  # line 3
        ("empty.jpg", "w_a"),  # line 4
        ("truncated.jpg", "w_a"),  # line 5
        ("text.jpg", "w_a"),  # line 6
        ("good2.jpg", "w_a"),  # line 7
        ("good2.jpg", "w_a"),  # line 8: duplicate
        (str(outside), "w_a"),  # line 9: absolute
        ("../outside.jpg", "w_a"),  # line 10: escapes
        ("link.jpg", "w_a"),  # line 11: symlink leaving train/
        ("noid.jpg", "   "),  # line 12
        ("shared.jpg", "w_a"),  # line 13: also a test image
        ("good3.jpg", "new_whale"),  # line 14
        (" ", "w_a"),  # line 15: blank name
    ]
    files = {
        "good1.jpg": colour_jpeg(1),
        "empty.jpg": b"",
        "truncated.jpg": truncated_jpeg(),
        "text.jpg": b"this is not an image\n",
        "good2.jpg": colour_jpeg(2),
        "noid.jpg": colour_jpeg(3),
        "shared.jpg": colour_jpeg(4),
        "good3.jpg": colour_jpeg(5),
    }
    test = {"t1.jpg": colour_jpeg(6), "shared.jpg": colour_jpeg(7), "t_bad.jpg": b""}
    make_layout(root, train, files, test)
    (root / "train" / "link.jpg").symlink_to(outside)
    return root


EXPECTED_PROBLEMS = [
    ("train", "missing.jpg", "train.csv line 3", "does not exist under"),
    ("train", "empty.jpg", "train.csv line 4", "is empty (0 bytes)"),
    ("train", "truncated.jpg", "train.csv line 5", "is truncated"),
    ("train", "text.jpg", "train.csv line 6", "is not a recognised image file"),
    ("train", "good2.jpg", "train.csv line 8", "is a duplicate of train.csv line 7"),
    ("train", "outside.jpg", "train.csv line 9", "is an absolute path"),
    ("train", "../outside.jpg", "train.csv line 10", "contains '..'"),
    ("train", "link.jpg", "train.csv line 11", "resolves outside"),
    ("train", "noid.jpg", "train.csv line 12", "has an empty Id"),
    ("train", "shared.jpg", "train.csv line 13", "is also listed in the test set"),
    ("train", " ", "train.csv line 15", "has an empty Image value"),
    ("test", "t_bad.jpg", "test folder", "is empty (0 bytes)"),
]


def test_every_bad_row_is_reported_in_one_error(tmp_path):
    root = bad_layout(tmp_path / "data")
    with pytest.raises(InputError) as caught:
        run(root)
    message = str(caught.value)
    assert message.startswith("12 bad image row(s)")
    lines = message.splitlines()[1:]
    assert len(lines) == len(EXPECTED_PROBLEMS)
    for line, (_, image, where, problem) in zip(lines, EXPECTED_PROBLEMS):
        assert line.startswith(f"{where}: image '")
        assert image in line and problem in line
    assert f"does not exist under {(root / 'train').resolve()}" in message
    assert not (tmp_path / "out").exists()  # nothing written on error


def test_skip_drops_and_records_bad_rows(tmp_path, caplog):
    root = bad_layout(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        train, test, rejected, summary = run(root, on_bad_image="skip")
    assert train["image"].tolist() == ["good1.jpg", "good2.jpg", "good3.jpg"]
    assert test["image"].tolist() == ["shared.jpg", "t1.jpg"]  # the test copy of shared.jpg stays
    assert summary["n_rejected"] == 12
    assert "skipped 12 bad image row(s)" in caplog.text

    assert list(rejected.columns) == ["split", "image", "problem"]
    assert len(rejected) == len(EXPECTED_PROBLEMS)
    for (_, row), (split, image, where, problem) in zip(rejected.iterrows(), EXPECTED_PROBLEMS):
        assert row["split"] == split
        assert image in row["image"]
        assert problem in row["problem"] and f"({where})" in row["problem"]


def test_duplicates_with_conflicting_ids_reject_every_listing(tmp_path):
    root = make_layout(
        tmp_path / "data",
        [("a.jpg", "w_1"), ("b.jpg", "w_2"), ("a.jpg", "w_3")],
        {"a.jpg": colour_jpeg(1), "b.jpg": colour_jpeg(2)},
        {"t.jpg": colour_jpeg(3)},
    )
    train, _, rejected, _ = run(root, on_bad_image="skip")
    assert train["image"].tolist() == ["b.jpg"]
    assert rejected["problem"].tolist() == [
        "is listed again with a different Id (train.csv line 4) (train.csv line 2)",
        "is a duplicate of train.csv line 2 (train.csv line 4)",
    ]


def test_bad_sample_submission_rows(tmp_path):
    root = good_layout(tmp_path / "data", submission=["t1.jpeg", "gone.jpg", "t1.jpeg"])
    with pytest.raises(InputError) as caught:
        run(root)
    message = str(caught.value)
    assert "sample_submission.csv line 3: image 'gone.jpg' does not exist under" in message
    assert "sample_submission.csv line 4: image 't1.jpeg' is a duplicate of sample_submission.csv line 2" in message


# --- configuration errors ------------------------------------------------------------------------


def test_missing_column_names_file_and_column(tmp_path):
    root = make_layout(
        tmp_path / "data",
        [],
        {"a.jpg": colour_jpeg(1)},
        {"t.jpg": colour_jpeg(2)},
        train_csv_text="Image,Label\na.jpg,w_1\n",
    )
    with pytest.raises(InputError, match=r"train\.csv: missing column 'Id'"):
        run(root)


def test_missing_train_csv(tmp_path):
    root = good_layout(tmp_path / "data")
    (root / "train.csv").unlink()
    with pytest.raises(InputError, match=r"missing .*train\.csv"):
        run(root)


def test_missing_train_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.csv").write_text("Image,Id\n")
    (root / "test").mkdir()
    with pytest.raises(InputError, match=r"missing training image folder .*train"):
        run(root)


def test_empty_test_folder(tmp_path):
    root = make_layout(tmp_path / "data", [("a.jpg", "w_1")], {"a.jpg": colour_jpeg(1)}, {"readme.txt": b"x"})
    with pytest.raises(InputError, match=r"test folder .*test holds no images"):
        run(root)


def test_no_usable_training_images_left(tmp_path):
    root = make_layout(tmp_path / "data", [("a.jpg", "w_1")], {"a.jpg": b""}, {"t.jpg": colour_jpeg(1)})
    with pytest.raises(InputError, match=r"no usable training images left in .*train\.csv") as caught:
        run(root, on_bad_image="skip")
    assert "image 'a.jpg' is empty (0 bytes)" in str(caught.value)


def test_empty_train_csv(tmp_path):
    root = make_layout(tmp_path / "data", [], {}, {"t.jpg": colour_jpeg(1)})
    with pytest.raises(InputError, match="no usable training images"):
        run(root)


def test_bad_options(tmp_path):
    root = good_layout(tmp_path / "data")
    with pytest.raises(InputError, match="on_bad_image"):
        run(root, on_bad_image="ignore")
    with pytest.raises(InputError, match="test_order"):
        run(root, test_order="random")
    with pytest.raises(InputError, match="unknown kind"):
        run(root, annotations={"segments": "x"})


# --- annotations ---------------------------------------------------------------------------------


def annotated_layout(root: Path) -> Path:
    good_layout(root)
    (root / "train" / "broken.jpg").write_bytes(b"")
    with open(root / "train.csv", "a") as handle:
        handle.write("broken.jpg,w_c\n")
    masks = root / "masks"
    masks.mkdir()
    for stem in ("a1", "t2", "broken"):
        Image.new("L", (4, 4), 255).save(masks / f"{stem}.png")
    pd.DataFrame(
        {
            "Image": ["a1.jpg", "a1.jpg", "t1.jpeg", "broken.jpg"],
            "keypoint": ["left_tip", "notch", "left_tip", "notch"],
            "x": ["1.5", "", "3", "4"],
            "y": ["2", "", "4", "5"],
            "visible": [1, 0, 1, 1],
        }
    ).to_csv(root / "keypoints.csv", index=False)
    pd.DataFrame(
        {
            "Image": ["a1.jpg", "a1.jpg", "t2.JPG", "broken.jpg"],
            "x0": [0, 5, 1, 0],
            "y0": [0, 1, 1, 0],
            "x1": [10, 9, 20, 3],
            "y1": [12, 8, 15, 3],
        }
    ).to_csv(root / "boxes.csv", index=False)
    return root


def test_annotations_are_read_and_filtered(tmp_path):
    root = annotated_layout(tmp_path / "data")
    annotations = {"masks": "masks", "keypoints": root / "keypoints.csv", "boxes": "boxes.csv"}
    train, test, rejected, summary = run(root, annotations=annotations, on_bad_image="skip")
    assert rejected["image"].tolist() == ["broken.jpg"]

    assert train.columns[-1] == "mask_path" and test.columns[-1] == "mask_path"
    masks = dict(zip(train["image"], train["mask_path"])) | dict(zip(test["image"], test["mask_path"]))
    assert masks["a1.jpg"] == str((root / "masks" / "a1.png").resolve())
    assert masks["t2.JPG"] == str((root / "masks" / "t2.png").resolve())
    assert pd.isna(masks["a2.jpg"]) and pd.isna(masks["t1.jpeg"])

    keypoints = pd.read_parquet(tmp_path / "out" / "keypoints.parquet")
    assert list(keypoints.columns) == ["image", "keypoint", "x", "y", "visible"]
    assert keypoints["image"].tolist() == ["a1.jpg", "a1.jpg", "t1.jpeg"]  # broken.jpg dropped
    assert keypoints["x"].tolist()[0] == 1.5 and np.isnan(keypoints["x"].tolist()[1])
    assert keypoints["visible"].tolist() == [True, False, True]

    boxes = pd.read_parquet(tmp_path / "out" / "boxes.parquet")
    assert list(boxes.columns) == ["image", "x0", "y0", "x1", "y1"]
    assert boxes["image"].tolist() == ["a1.jpg", "a1.jpg", "t2.JPG"]
    assert boxes["x1"].tolist() == [10.0, 9.0, 20.0]
    assert (summary["n_masks"], summary["n_keypoints"], summary["n_boxes"]) == (2, 3, 3)


def test_annotation_row_for_unknown_image(tmp_path):
    root = annotated_layout(tmp_path / "data")
    with open(root / "boxes.csv", "a") as handle:
        handle.write("stranger.jpg,0,0,1,1\n")
    with pytest.raises(InputError) as caught:
        run(root, annotations={"boxes": "boxes.csv"}, on_bad_image="skip")
    assert "boxes.csv line 6: image 'stranger.jpg' is in neither train.csv nor the test set" in str(caught.value)


def test_annotation_values_are_validated(tmp_path):
    root = annotated_layout(tmp_path / "data")
    pd.DataFrame(
        {
            "Image": ["a1.jpg", "a2.jpg"],
            "keypoint": ["tip", "tip"],
            "x": ["1", "left"],
            "y": ["", "2"],
            "visible": ["1", "2"],
        }
    ).to_csv(root / "keypoints.csv", index=False)
    with pytest.raises(InputError) as caught:
        run(root, annotations={"keypoints": "keypoints.csv"}, on_bad_image="skip")
    message = str(caught.value)
    assert "keypoints.csv line 2: y is not a number: ''" in message
    assert "keypoints.csv line 3: visible must be 0 or 1, got '2'; x is not a number: 'left'" in message

    boxes = pd.DataFrame({"Image": ["a1.jpg"], "x0": [5], "y0": [0], "x1": [5], "y1": [3]})
    boxes.to_csv(root / "boxes.csv", index=False)
    with pytest.raises(InputError, match=r"boxes\.csv line 2: x0 must be < x1"):
        run(root, annotations={"boxes": "boxes.csv"}, on_bad_image="skip")


def test_missing_annotation_sources(tmp_path):
    root = good_layout(tmp_path / "data")
    with pytest.raises(InputError, match=r"annotations\.masks: folder .*nomasks does not exist"):
        run(root, annotations={"masks": "nomasks"})
    (root / "kp.csv").write_text("Image,keypoint,x,y\n")
    with pytest.raises(InputError, match=r"kp\.csv: missing column 'visible'"):
        run(root, annotations={"keypoints": "kp.csv"})


# --- io helpers ----------------------------------------------------------------------------------


def test_read_image_rgb_converts_modes(tmp_path):
    sixteen_bit = tmp_path / "deep.png"
    Image.fromarray(np.full((3, 5), 40000, dtype=np.uint16)).save(sixteen_bit)
    rgb = read_image_rgb(sixteen_bit)
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.uint8
    assert (rgb == 40000 >> 8).all()  # scaled, not clipped at 255
    assert is_grayscale(rgb)

    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (0, 255, 0, 0)).save(cmyk)
    assert read_image_rgb(cmyk).shape == (4, 6, 3)

    palette = tmp_path / "palette.png"
    Image.new("P", (4, 4), 1).save(palette, transparency=0)
    assert read_image_rgb(palette).shape == (4, 4, 3)


def test_read_image_rgb_names_the_path(tmp_path):
    empty = tmp_path / "zero.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.jpg: is empty \(0 bytes\)"):
        read_image_rgb(empty)
    with pytest.raises(InputError, match=r"nothere\.jpg: cannot be read"):
        read_image_rgb(tmp_path / "nothere.jpg")


def test_atomic_writes_create_parents_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "table.parquet"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), target)
    write_json_atomic({"ok": True}, tmp_path / "a" / "summary.json")
    assert pd.read_parquet(target)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["b", "summary.json", "table.parquet"]
    assert os.stat(target).st_mode & 0o044  # readable by others as the umask allows, unlike mkstemp
    with pytest.raises(ValueError):
        write_json_atomic({"bad": float("nan")}, tmp_path / "a" / "summary.json")
    assert (tmp_path / "a" / "summary.json").read_text().strip() == '{\n  "ok": true\n}'
