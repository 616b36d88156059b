"""Data hygiene on ingest (issue 24): ids stripped and checked, ids differing only in case, photos
too small, exact and near duplicates across train and test, conflicting labels and train/test leaks.
Every message is asserted exactly. Tiny Kaggle folders in tmp_path; no Snakemake."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from flukeline.core.errors import InputError
from flukeline.data.duplicates import DUPLICATE_COLUMNS, NEAR_DUPLICATE_MAX_DISTANCE, hash_distance, perceptual_hash
from flukeline.data.ingest import ingest

# --- photos --------------------------------------------------------------------------------------


def scene(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth random picture (sea, sky and a dark shape), as structured as a photo is."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    x0, y0 = rng.integers(0, size[0] // 2 + 1), rng.integers(0, size[1] // 2 + 1)
    pixels[y0 : y0 + size[1] // 3, x0 : x0 + size[0] // 3] //= 4
    return Image.fromarray(pixels)


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def near_copy(image: Image.Image, brightness: float = 1.1, quality: int = 75) -> bytes:
    """The same photo resized to 80 %, brightened (10 %) and re-encoded (quality 75)."""
    smaller = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.Resampling.BILINEAR)
    return jpeg(ImageEnhance.Brightness(smaller).enhance(brightness), quality=quality)


def flat(colour, size=(60, 40)) -> bytes:
    return jpeg(Image.new("RGB", size, colour))


# --- layouts -------------------------------------------------------------------------------------


def write_layout(root: Path, csv_text: str, train_files: dict[str, bytes], test_files: dict[str, bytes]) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for name, data in train_files.items():
        (root / "train" / name).write_bytes(data)
    for name, data in test_files.items():
        (root / "test" / name).write_bytes(data)
    (root / "train.csv").write_text(csv_text, encoding="utf-8")
    return root


def rows(*pairs: tuple[str, str]) -> str:
    return "Image,Id\n" + "".join(f"{image},{label}\n" for image, label in pairs)


def distinct_files(*names: str, first_seed: int = 100) -> dict[str, bytes]:
    return {name: jpeg(scene(first_seed + i)) for i, name in enumerate(names)}


def run(root: Path, **options):
    out = root.parent / "out"
    settings = {"folds": 2, "min_image_side": 0, **options}  # tiny test photos; the min_image_side tests set it
    summary = ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", settings)
    return (
        pd.read_parquet(out / "train.parquet"),
        pd.read_csv(out / "rejected.csv", keep_default_na=False),
        pd.read_csv(out / "duplicates.csv", keep_default_na=False),
        summary,
    )


def warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


# --- ids -----------------------------------------------------------------------------------------


def test_ids_are_stripped_and_the_rows_named(tmp_path, caplog):
    csv_text = rows(("a1.jpg", " w_1234 "), ("a2.jpg", "w_1234"), ("n1.jpg", " new_whale "), ("n2.jpg", "new_whale"))
    root = write_layout(
        tmp_path / "data",
        csv_text,
        distinct_files("a1.jpg", "a2.jpg", "n1.jpg", "n2.jpg"),
        distinct_files("t1.jpg", first_seed=200),
    )
    with caplog.at_level(logging.WARNING):
        train, rejected, _, summary = run(root)
    assert train["id"].tolist() == ["w_1234", "w_1234", "new_whale", "new_whale"]
    assert rejected.empty
    assert (summary["n_identities"], summary["new_whale_share"]) == (1, 0.5)  # ' new_whale ' is no animal
    assert warnings(caplog) == [
        "removed whitespace around the Id of 2 row(s): train.csv line 2 (' w_1234 '), train.csv line 4 (' new_whale ')"
    ]


BAD_IDS = [
    # (Id as written in train.csv, the problem reported for its row)
    ('"   "', "has an empty Id"),
    ('"w_1,w_2"', "has an Id with a comma in it ('w_1,w_2')"),
    ('"w_1\nw_2"', "has an Id with a line break in it ('w_1\\nw_2')"),
    ("w 1", "has an Id with a space in it ('w 1'); the submission separates ids by spaces"),
]


def bad_id_layout(root: Path) -> Path:
    bad_rows = "".join(f"b{i}.jpg,{label}\n" for i, (label, _) in enumerate(BAD_IDS))
    csv_text = "Image,Id\na1.jpg,w_a\na2.jpg,w_a\n" + bad_rows
    files = distinct_files("a1.jpg", "a2.jpg", *(f"b{i}.jpg" for i in range(len(BAD_IDS))))
    return write_layout(root, csv_text, files, distinct_files("t1.jpg", first_seed=200))


def test_bad_ids_stop_ingest_with_their_rows(tmp_path):
    root = bad_id_layout(tmp_path / "data")
    with pytest.raises(InputError) as caught:
        run(root)
    # The quoted line break makes b2's row two physical lines; N counts CSV records, as elsewhere.
    assert str(caught.value).splitlines() == [
        f"4 bad image row(s) under {root.resolve()} (set on_bad_image to 'skip' to drop them):",
        "train.csv line 4: image 'b0.jpg' has an empty Id",
        "train.csv line 5: image 'b1.jpg' has an Id with a comma in it ('w_1,w_2')",
        "train.csv line 6: image 'b2.jpg' has an Id with a line break in it ('w_1\\nw_2')",
        "train.csv line 7: image 'b3.jpg' has an Id with a space in it ('w 1'); the submission separates ids by spaces",
    ]


def test_bad_ids_are_skipped_into_rejected_csv(tmp_path):
    root = bad_id_layout(tmp_path / "data")
    train, rejected, _, _ = run(root, on_bad_image="skip")
    assert train["image"].tolist() == ["a1.jpg", "a2.jpg"]
    assert rejected.to_dict("records") == [
        {"split": "train", "image": f"b{i}.jpg", "problem": f"{problem} (train.csv line {i + 4})"}
        for i, (_, problem) in enumerate(BAD_IDS)
    ]


def test_ids_differing_only_in_case_are_named(tmp_path, caplog):
    csv_text = rows(
        ("a1.jpg", "w_1"),
        ("a2.jpg", "w_1"),
        ("a3.jpg", "W_1"),
        ("b1.jpg", "w_2"),
        ("n1.jpg", "New_Whale"),
        ("n2.jpg", "new_whale"),
    )
    files = distinct_files("a1.jpg", "a2.jpg", "a3.jpg", "b1.jpg", "n1.jpg", "n2.jpg")
    root = write_layout(tmp_path / "data", csv_text, files, distinct_files("t1.jpg", first_seed=200))
    with caplog.at_level(logging.WARNING):
        train, _, _, _ = run(root)
    assert train["id"].tolist() == ["w_1", "w_1", "W_1", "w_2", "New_Whale", "new_whale"]  # kept as written
    assert warnings(caplog) == [
        "Ids that differ only in case are kept as different animals:"
        " 'w_1' (2 row(s), first train.csv line 2), 'W_1' (1 row(s), first train.csv line 4)",
        "Ids that differ only in case are kept as different animals:"
        " 'New_Whale' (1 row(s), first train.csv line 6), 'new_whale' (1 row(s), first train.csv line 7)",
    ]


# --- small photos --------------------------------------------------------------------------------


def small_layout(root: Path) -> Path:
    files = distinct_files("a1.jpg", "a2.jpg") | {
        "dot.png": jpeg(Image.new("RGB", (1, 1), (9, 9, 9))),
        "strip.jpg": jpeg(scene(7, size=(200, 20))),
    }
    csv_text = rows(("a1.jpg", "w_a"), ("a2.jpg", "w_a"), ("dot.png", "w_b"), ("strip.jpg", "w_b"))
    return write_layout(root, csv_text, files, {"t1.jpg": jpeg(scene(8, size=(31, 40)))})


def test_small_photos_are_named_in_a_warning_and_kept(tmp_path, caplog):
    root = small_layout(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        train, rejected, _, _ = run(root, min_image_side=32)
    assert len(train) == 4 and rejected.empty
    assert warnings(caplog) == [
        "3 image(s) have a side under 32 px (data.min_image_side): train.csv line 4 'dot.png' (1x1),"
        " train.csv line 5 'strip.jpg' (200x20), test folder 't1.jpg' (31x40)"
    ]


def test_small_photos_are_skipped_with_skip(tmp_path, caplog):
    root = small_layout(tmp_path / "data")
    root.joinpath("test", "t2.jpg").write_bytes(jpeg(scene(9)))
    with caplog.at_level(logging.WARNING):
        train, rejected, _, _ = run(root, min_image_side=32, on_bad_image="skip")
    assert train["image"].tolist() == ["a1.jpg", "a2.jpg"]
    assert rejected.to_dict("records") == [
        {
            "split": "train",
            "image": "dot.png",
            "problem": "is 1x1 px, under the minimum side of 32 px (train.csv line 4)",
        },
        {
            "split": "train",
            "image": "strip.jpg",
            "problem": "is 200x20 px, under the minimum side of 32 px (train.csv line 5)",
        },
        {"split": "test", "image": "t1.jpg", "problem": "is 31x40 px, under the minimum side of 32 px (test folder)"},
    ]
    assert "image(s) have a side under" not in caplog.text


def test_no_size_check_by_default_or_at_zero(tmp_path, caplog):
    root = small_layout(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        train, rejected, _, _ = run(root, on_bad_image="skip")
    assert len(train) == 4 and rejected.empty and "side under" not in caplog.text
    with pytest.raises(InputError, match="min_image_side must be >= 0, got -1"):
        run(root, min_image_side=-1)


# --- duplicates, conflicting labels, leaks -------------------------------------------------------


def test_perceptual_hash_finds_a_near_copy_and_not_a_different_photo():
    photo = scene(1)
    near = perceptual_hash(np.asarray(Image.open(io.BytesIO(near_copy(photo))).convert("RGB")))
    original = perceptual_hash(np.asarray(photo))
    assert len(original) == 32  # 256 bits
    assert hash_distance(original, near) <= NEAR_DUPLICATE_MAX_DISTANCE // 2
    for seed in range(2, 12):
        assert hash_distance(original, perceptual_hash(np.asarray(scene(seed)))) > 2 * NEAR_DUPLICATE_MAX_DISTANCE
    assert perceptual_hash(np.full((40, 60, 3), 128, np.uint8)) is None  # flat: nothing to compare


def duplicate_layout(root: Path) -> Path:
    whale, other, leaked, sea = scene(1), scene(2), scene(3), scene(4)
    train_files = {
        "a1.jpg": jpeg(whale),
        "a1_copy.jpg": jpeg(whale),  # the same bytes, under another known id
        "a1_near.jpg": near_copy(whale),  # resized, brightened, re-encoded: a near duplicate
        "b1.jpg": jpeg(other),  # a different photo: in no group
        "c1.jpg": jpeg(leaked),
        "n1.jpg": jpeg(sea),
        "n1_near.jpg": near_copy(sea),  # two new_whale photos of one animal: no conflict
        "black1.jpg": flat((0, 0, 0)),  # flat photos that differ in bytes are not near duplicates
        "black2.jpg": flat((1, 1, 1), size=(80, 50)),
    }
    csv_text = rows(
        ("a1.jpg", "w_1"),
        ("a1_copy.jpg", "w_2"),
        ("a1_near.jpg", "w_1"),
        ("b1.jpg", "w_3"),
        ("c1.jpg", "w_4"),
        ("n1.jpg", "new_whale"),
        ("n1_near.jpg", "new_whale"),
        ("black1.jpg", "w_5"),
        ("black2.jpg", "w_6"),
    )
    test_files = {
        "t_exact.jpg": jpeg(leaked),  # a byte copy of a training photo: a leak
        "t_near.jpg": near_copy(whale, brightness=1.05, quality=85),  # another near copy of group 1
        "t_new.jpg": jpeg(scene(5)),
    }
    return write_layout(root, csv_text, train_files, test_files)


def test_duplicate_groups_conflicts_and_leaks(tmp_path, caplog):
    root = duplicate_layout(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        train, rejected, duplicates, summary = run(root)
    assert len(train) == 9 and rejected.empty  # duplicates are reported, not rejected

    assert list(duplicates.columns) == DUPLICATE_COLUMNS
    records = duplicates.drop(columns="distance").to_dict("records")
    assert records == [
        {"group": 1, "split": "train", "image": "a1.jpg", "id": "w_1", "kind": "exact"},
        {"group": 1, "split": "train", "image": "a1_copy.jpg", "id": "w_2", "kind": "exact"},
        {"group": 1, "split": "train", "image": "a1_near.jpg", "id": "w_1", "kind": "near"},
        {"group": 1, "split": "test", "image": "t_near.jpg", "id": "", "kind": "near"},
        {"group": 2, "split": "train", "image": "c1.jpg", "id": "w_4", "kind": "exact"},
        {"group": 2, "split": "test", "image": "t_exact.jpg", "id": "", "kind": "exact"},
        {"group": 3, "split": "train", "image": "n1.jpg", "id": "new_whale", "kind": "near"},
        {"group": 3, "split": "train", "image": "n1_near.jpg", "id": "new_whale", "kind": "near"},
    ]
    distance = duplicates["distance"].tolist()
    assert distance[:2] == [0, 0] and distance[4:7] == [0, 0, 0]
    assert all(0 < d <= NEAR_DUPLICATE_MAX_DISTANCE for d in distance[2:4] + distance[7:])

    duplicate_keys = [key for key in summary if any(word in key for word in ("duplicate", "leak", "conflict"))]
    assert {key: summary[key] for key in duplicate_keys} == {
        "n_duplicate_groups": 3,
        "n_duplicate_images": 8,
        "n_exact_duplicate_groups": 1,
        "n_near_duplicate_groups": 2,
        "n_conflicting_id_groups": 1,
        "n_leaked_test_images": 2,
    }
    assert warnings(caplog) == [
        "3 duplicate group(s) of 8 image(s) across train and test (1 exact, 2 near): 1 with conflicting known ids,"
        f" 2 test image(s) duplicating training images; see {tmp_path / 'out' / 'duplicates.csv'}",
        "duplicate group 1 (near): one photo under 2 known ids: train.csv line 2 'a1.jpg' Id 'w_1',"
        " train.csv line 3 'a1_copy.jpg' Id 'w_2', train.csv line 4 'a1_near.jpg' Id 'w_1'",
        "duplicate group 1 (near): test image 't_near.jpg' duplicates training 'a1.jpg' (Id 'w_1'),"
        " 'a1_copy.jpg' (Id 'w_2'), 'a1_near.jpg' (Id 'w_1')",
        "duplicate group 2 (exact): test image 't_exact.jpg' duplicates training 'c1.jpg' (Id 'w_4')",
    ]


def test_no_duplicates_writes_an_empty_table(tmp_path, caplog):
    root = write_layout(
        tmp_path / "data",
        rows(("a1.jpg", "w_1"), ("a2.jpg", "w_1")),
        distinct_files("a1.jpg", "a2.jpg"),
        distinct_files("t1.jpg", "t2.jpg", first_seed=200),
    )
    out = tmp_path / "elsewhere" / "dups.csv"
    with caplog.at_level(logging.INFO, logger="flukeline.data.duplicates"):
        summary = ingest(
            root,
            tmp_path / "out" / "train.parquet",
            tmp_path / "out" / "test.parquet",
            tmp_path / "out" / "rejected.csv",
            {"folds": 2, "min_image_side": 0},
            out_duplicates=out,
        )
    assert pd.read_csv(out).columns.tolist() == DUPLICATE_COLUMNS and len(pd.read_csv(out)) == 0
    assert not (tmp_path / "out" / "duplicates.csv").exists()
    assert (summary["n_duplicate_groups"], summary["n_leaked_test_images"]) == (0, 0)
    from_duplicates = [record.getMessage() for record in caplog.records if record.name == "flukeline.data.duplicates"]
    assert from_duplicates == ["no duplicate images found (exact or near) across train and test"]


def test_a_rejected_row_takes_no_part_in_the_groups(tmp_path):
    # b1.jpg is a byte copy of a1.jpg under another id, but its row is rejected (a space in its Id).
    files = distinct_files("a1.jpg", "a2.jpg")
    files["b1.jpg"] = files["a1.jpg"]
    root = write_layout(
        tmp_path / "data",
        rows(("a1.jpg", "w_1"), ("a2.jpg", "w_1"), ("b1.jpg", "w 2")),
        files,
        distinct_files("t1.jpg", first_seed=200),
    )
    _, rejected, duplicates, _ = run(root, on_bad_image="skip")
    assert rejected["image"].tolist() == ["b1.jpg"] and duplicates.empty


def test_long_listings_name_the_first_rows_only(tmp_path, caplog):
    # 22 stripped ids and 22 leaked test photos: the warnings name 20 and count the rest.
    n = 22
    names = [f"a{i}.jpg" for i in range(n)]
    files = distinct_files(*names)
    root = write_layout(
        tmp_path / "data",
        rows(*((name, f" w_{i // 2} ") for i, name in enumerate(names))),
        files,
        {f"t{i}.jpg": data for i, data in enumerate(files.values())},
    )
    with caplog.at_level(logging.WARNING):
        _, _, duplicates, summary = run(root)
    stripped = ", ".join(f"train.csv line {i + 2} (' w_{i // 2} ')" for i in range(20))
    assert warnings(caplog)[0] == f"removed whitespace around the Id of 22 row(s): {stripped} and 2 more"
    assert summary["n_leaked_test_images"] == n and len(duplicates) == 2 * n
    assert warnings(caplog)[2:] == [
        *(
            f"duplicate group {i + 1} (exact): test image 't{i}.jpg' duplicates training 'a{i}.jpg' (Id 'w_{i // 2}')"
            for i in range(20)
        ),
        f"... and 2 more conflict(s) and leak(s); see {tmp_path / 'out' / 'duplicates.csv'}",
    ]
