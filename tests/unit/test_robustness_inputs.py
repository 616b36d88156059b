"""Messy field data (issue 10): every class of bad input either ingests correctly or stops with a
message naming the file/row/key and the problem (or, with data.on_bad_image: skip, is logged and
recorded in rejected.csv). The same images through Snakemake, and the config messages as Snakemake
prints them, are in tests/workflow/test_robustness.py.

Each case builds its input in tmp_path; none trains a model."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers_messy_inputs import ACCEPTED, BASE_TRAIN, noise_jpeg, write_layout

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.data.ingest import ingest

# --- image makers (the rest are in tests/helpers_messy_inputs.py) ---------------------------------


def corrupt_jpeg() -> bytes:
    """A JPEG whose header is intact (it is recognised) but whose scan header is damaged."""
    data = bytearray(noise_jpeg(11, (64, 64)))
    start_of_scan = data.find(b"\xff\xda")
    data[start_of_scan + 4] = 7  # component count of the scan: 7 of a 3-component image
    return bytes(data)


def truncated_jpeg() -> bytes:
    data = noise_jpeg(12, (64, 64))
    return data[: len(data) // 2]


# --- layouts (BASE_TRAIN and write_layout are in tests/helpers_messy_inputs.py)


def run_ingest(root: Path, **options):
    out = root.parent / "out"
    settings = {"folds": 2, "min_image_side": 0, **options}  # tiny test photos (see test_ingest_hygiene)
    summary = ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", settings)
    return pd.read_parquet(out / "train.parquet"), pd.read_csv(out / "rejected.csv", keep_default_na=False), summary


# --- images that must be accepted and decoded correctly (ACCEPTED: tests/helpers_messy_inputs.py)


@pytest.mark.parametrize("case", ACCEPTED)
def test_unusual_images_are_accepted_and_decoded(tmp_path, case):
    name, data, (width, height), grayscale, check = ACCEPTED[case]
    root = write_layout(tmp_path / "data", [(name, "w_b")], {name: data})
    train, rejected, _ = run_ingest(root)
    assert rejected.empty
    row = train.set_index("image").loc[name]
    assert (row["width"], row["height"], row["grayscale"]) == (width, height, grayscale)
    assert Path(row["path"]) == (root / "train" / name).resolve()
    rgb = read_image_rgb(row["path"])  # the reader every later stage uses
    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3)
    if check:
        check(rgb)


# --- rows that must be rejected with a reason -----------------------------------------------------

OUTSIDE = noise_jpeg(40)

REJECTED = {
    # case: (extra train.csv rows, extra train files, expected message line for the first bad row)
    "corrupt_jpeg": (
        [("corrupt.jpg", "w_b")],
        {"corrupt.jpg": corrupt_jpeg()},
        "train.csv line 5: image 'corrupt.jpg' cannot be decoded as an image "
        "(broken data stream when reading image file)",
    ),
    "truncated_jpeg": (
        [("cut.jpg", "w_b")],
        {"cut.jpg": truncated_jpeg()},
        "train.csv line 5: image 'cut.jpg' is truncated (image data ends early)",
    ),
    "zero_byte_file": (
        [("zero.jpg", "w_b")],
        {"zero.jpg": b""},
        "train.csv line 5: image 'zero.jpg' is empty (0 bytes)",
    ),
    "not_an_image": (
        [("notes.jpg", "w_b")],
        {"notes.jpg": b"field notes, not a photo\n"},
        "train.csv line 5: image 'notes.jpg' is not a recognised image file",
    ),
    "missing_file": ([("gone.jpg", "w_b")], {}, "train.csv line 5: image 'gone.jpg' does not exist under {train}"),
    "duplicate_name": ([("a1.jpg", "w_a")], {}, "train.csv line 5: image 'a1.jpg' is a duplicate of train.csv line 2"),
    "path_escaping_root": (
        [("../outside.jpg", "w_b")],
        {},
        "train.csv line 5: image '../outside.jpg' contains '..' and would escape {train}",
    ),
    "absolute_path": (
        [("{outside}", "w_b")],
        {},
        "train.csv line 5: image '{outside}' is an absolute path (names must be relative to {train})",
    ),
    "symlink_leaving_root": (
        [("link.jpg", "w_b")],
        {},
        "train.csv line 5: image 'link.jpg' resolves outside {train} (to {outside})",
    ),
    "empty_id": ([("b1.jpg", "")], {"b1.jpg": noise_jpeg(41)}, "train.csv line 5: image 'b1.jpg' has an empty Id"),
    "empty_image_name": ([("", "w_b")], {}, "train.csv line 5: image '' has an empty Image value"),
}


def rejected_layout(tmp_path: Path, case: str) -> tuple[Path, str]:
    rows, files, expected = REJECTED[case]
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(OUTSIDE)
    rows = [(image.format(outside=outside), label) for image, label in rows]
    root = write_layout(tmp_path / "data", rows, files)
    if case == "symlink_leaving_root":
        (root / "train" / "link.jpg").symlink_to(outside)
    return root, expected.format(train=(root / "train").resolve(), outside=outside.resolve())


@pytest.mark.parametrize("case", REJECTED)
def test_bad_rows_stop_ingest_with_file_and_problem(tmp_path, case):
    root, expected = rejected_layout(tmp_path, case)
    with pytest.raises(InputError) as caught:
        run_ingest(root)
    assert str(caught.value).splitlines() == [
        f"1 bad image row(s) under {root.resolve()} (set on_bad_image to 'skip' to drop them):",
        expected,
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", REJECTED)
def test_skip_logs_and_records_bad_rows(tmp_path, case, caplog):
    root, expected = rejected_layout(tmp_path, case)
    with caplog.at_level(logging.WARNING):
        train, rejected, summary = run_ingest(root, on_bad_image="skip")
    where, problem = expected.split(": image ", 1)
    image, reason = problem[1:].split("' ", 1)
    assert rejected.to_dict("records") == [{"split": "train", "image": image, "problem": f"{reason} ({where})"}]
    assert f"skipped 1 bad image row(s); see {tmp_path / 'out' / 'rejected.csv'}" in caplog.text
    assert summary["n_rejected"] == 1
    assert set(train["image"]) >= {"a2.jpg", "n1.jpg"}


def test_unknown_columns_are_named_in_a_warning(tmp_path, caplog):
    csv_text = "Image,Id,photographer,Notes\n" + "".join(f"{i},{label},someone,\n" for i, label in BASE_TRAIN)
    root = write_layout(tmp_path / "data", [], {}, csv_text=csv_text)
    with caplog.at_level(logging.WARNING):
        train, _, _ = run_ingest(root)
    assert f"{root.resolve() / 'train.csv'}: ignoring unknown column(s) photographer, Notes" in caplog.text
    assert "photographer" not in train.columns and len(train) == 3


# --- whole-dataset problems, as the user sees them (the real CLI) ---------------------------------


def ingest_cli(root: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flukeline", "ingest", "--root", str(root), "--params", '{"folds": 2}']
    for name in ("train.parquet", "test.parquet", "rejected.csv", "summary.json"):
        command += [f"--{name.split('.')[0]}", str(out / name)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_empty_test_folder_is_named_by_the_cli(tmp_path):
    root = write_layout(tmp_path / "data", [], {}, test_files={"README.txt": b"photos to come"})
    result = ingest_cli(root, tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"flukeline ingest: error: test folder {(root / 'test').resolve()} holds no images"
        " (JPEG, PNG, HEIC/HEIF, TIFF, WebP, BMP or camera RAW files)"
    )


def test_config_choice_mistakes_name_every_alternative():
    from flukeline.core.config_check import config_problems

    schema = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    config = yaml.safe_load((schema.parents[2] / "config.yaml").read_text())
    assert config_problems(config, schema) == []
    config["match"]["pseudo_labels"]["min_similarity"] = "sometimes"
    config["match"]["new_whale_threshold"] = 1.5
    assert config_problems(config, schema) == [
        "match.new_whale_threshold: 1.5 is not 'calibrate' or a number from -1 to 1",
        "match.pseudo_labels.min_similarity: 'sometimes' is not a number from -1 to 1 or 'auto'",
    ]
