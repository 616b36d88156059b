"""Messy field data (issue 10): every class of bad input either ingests correctly or stops with a
message naming the file/row/key and the problem (or, with data.on_bad_image: skip, is logged and
recorded in rejected.csv). Safe loading of checkpoints and atomic writes of internal files.

Each case builds its input in tmp_path; none trains a model."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY, snakemake
from PIL import Image

from flukeline.core.checkpoint import resume_training_state, save_training_state
from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_parquet_atomic
from flukeline.core.weights import read_weights, save_weights
from flukeline.data.ingest import ingest

# --- image makers --------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_jpeg(seed: int, size=(40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=95)


def corrupt_jpeg() -> bytes:
    """A JPEG whose header is intact (it is recognised) but whose scan header is damaged."""
    data = bytearray(noise_jpeg(11, (64, 64)))
    start_of_scan = data.find(b"\xff\xda")
    data[start_of_scan + 4] = 7  # component count of the scan: 7 of a 3-component image
    return bytes(data)


def truncated_jpeg() -> bytes:
    data = noise_jpeg(12, (64, 64))
    return data[: len(data) // 2]


def exif_rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 high, left half red; EXIF orientation 6: shown rotated 90 degrees
    clockwise, 20 wide x 40 high with the red half on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), "JPEG", quality=100, exif=exif)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.full((12, 20), 40000, np.uint16)), "PNG")


# --- layouts -------------------------------------------------------------------------------------

# Two images of w_a and a new_whale: enough for ingest to accept the rest of a layout.
BASE_TRAIN = [("a1.jpg", "w_a"), ("a2.jpg", "w_a"), ("n1.jpg", "new_whale")]


def write_layout(root: Path, rows, files: dict[str, bytes], test_files: dict[str, bytes] | None = None,
                 csv_text: str | None = None) -> Path:
    """A Kaggle layout: train.csv from `rows` (after BASE_TRAIN) unless `csv_text` is given."""
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    base = {name: noise_jpeg(i) for i, (name, _) in enumerate(BASE_TRAIN)}
    for name, data in {**base, **files}.items():
        (root / "train" / name).write_bytes(data)
    if test_files is None:
        test_files = {"t1.jpg": noise_jpeg(21), "t2.jpg": noise_jpeg(22)}
    for name, data in test_files.items():
        (root / "test" / name).write_bytes(data)
    if csv_text is None:
        csv_text = "Image,Id\n" + "".join(f"{image},{label}\n" for image, label in BASE_TRAIN + list(rows))
    (root / "train.csv").write_text(csv_text, encoding="utf-8")
    return root


def run_ingest(root: Path, **options):
    out = root.parent / "out"
    summary = ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", n_folds=2, **options)
    return pd.read_parquet(out / "train.parquet"), pd.read_csv(out / "rejected.csv", keep_default_na=False), summary


# --- images that must be accepted and decoded correctly ------------------------------------------


def check_rgba(rgb):
    assert (rgb == (200, 30, 40)).all()  # alpha dropped, colour kept


def check_cmyk(rgb):
    assert (rgb[..., 1] < 40).all() and (rgb[..., 0] > 215).all() and (rgb[..., 2] > 215).all()  # magenta


def check_sixteen_bit(rgb):
    assert (rgb == 40000 >> 8).all()  # scaled to 8 bits, not clipped at 255


def check_exif(rgb):
    assert (rgb[:15, :, 0] > 200).all() and (rgb[25:, :, 2] > 200).all()  # red on top after rotation


ACCEPTED = {
    # case: (file name, bytes, (width, height) after decoding, grayscale, pixel check)
    "rgba_png": ("alpha.png", encode(Image.new("RGBA", (24, 16), (200, 30, 40, 128)), "PNG"), (24, 16), False, check_rgba),
    "cmyk_jpeg": ("cmyk.jpg", encode(Image.new("CMYK", (30, 20), (0, 255, 0, 0)), "JPEG", quality=100), (30, 20), False, check_cmyk),
    "sixteen_bit_png": ("deep.png", sixteen_bit_png(), (20, 12), True, check_sixteen_bit),
    "grayscale_jpeg": ("grey.jpg", encode(Image.linear_gradient("L").resize((32, 24)), "JPEG"), (32, 24), True, None),
    "tiny_16x16": ("tiny.jpg", noise_jpeg(31, (16, 16)), (16, 16), False, None),
    "very_wide_6000x400": ("wide.jpg", noise_jpeg(32, (6000, 400)), (6000, 400), False, None),
    "exif_rotated": ("rot.jpg", exif_rotated_jpeg(), (20, 40), False, check_exif),
    "non_ascii_name": ("baleine_é_ø.jpg", noise_jpeg(33), (40, 30), False, None),
}


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


# --- rows that must be rejected with a reason ----------------------------------------------------

OUTSIDE = noise_jpeg(40)

REJECTED = {
    # case: (extra train.csv rows, extra train files, expected message line for the first bad row)
    "corrupt_jpeg": (
        [("corrupt.jpg", "w_b")], {"corrupt.jpg": corrupt_jpeg()},
        "train.csv line 5: image 'corrupt.jpg' cannot be decoded as an image (broken data stream when reading image file)",
    ),
    "truncated_jpeg": (
        [("cut.jpg", "w_b")], {"cut.jpg": truncated_jpeg()},
        "train.csv line 5: image 'cut.jpg' is truncated (image data ends early)",
    ),
    "zero_byte_file": (
        [("zero.jpg", "w_b")], {"zero.jpg": b""},
        "train.csv line 5: image 'zero.jpg' is empty (0 bytes)",
    ),
    "not_an_image": (
        [("notes.jpg", "w_b")], {"notes.jpg": b"field notes, not a photo\n"},
        "train.csv line 5: image 'notes.jpg' is not a recognised image file",
    ),
    "missing_file": (
        [("gone.jpg", "w_b")], {},
        "train.csv line 5: image 'gone.jpg' does not exist under {train}",
    ),
    "duplicate_name": (
        [("a1.jpg", "w_a")], {},
        "train.csv line 5: image 'a1.jpg' is a duplicate of train.csv line 2",
    ),
    "path_escaping_root": (
        [("../outside.jpg", "w_b")], {},
        "train.csv line 5: image '../outside.jpg' contains '..' and would escape {train}",
    ),
    "absolute_path": (
        [("{outside}", "w_b")], {},
        "train.csv line 5: image '{outside}' is an absolute path (names must be relative to {train})",
    ),
    "symlink_leaving_root": (
        [("link.jpg", "w_b")], {},
        "train.csv line 5: image 'link.jpg' resolves outside {train} (to {outside})",
    ),
    "empty_id": (
        [("b1.jpg", "")], {"b1.jpg": noise_jpeg(41)},
        "train.csv line 5: image 'b1.jpg' has an empty Id",
    ),
    "empty_image_name": (
        [("", "w_b")], {},
        "train.csv line 5: image '' has an empty Image value",
    ),
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
        f"1 bad image row(s) under {root.resolve()} (set on_bad_image to 'skip' to drop them):", expected
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


# --- whole-dataset problems, as the user sees them (the real CLI and Snakemake) --------------------


def ingest_cli(root: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flukeline", "ingest", "--root", str(root), "--folds", "2"]
    for name in ("train.parquet", "test.parquet", "rejected.csv", "summary.json"):
        command += [f"--{name.split('.')[0]}", str(out / name)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_empty_test_folder_is_named_by_the_cli(tmp_path):
    root = write_layout(tmp_path / "data", [], {}, test_files={"README.txt": b"photos to come"})
    result = ingest_cli(root, tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"flukeline ingest: error: test folder {(root / 'test').resolve()} holds no images (.jpg, .jpeg, .png)"
    )


def test_only_new_whale_training_set_stops_the_workflow_with_the_reason(tmp_path):
    """Through Snakemake on a user's data root: the ingest job fails, its log says why."""
    rows = "".join(f"n{i}.jpg,new_whale\n" for i in range(3))
    root = write_layout(tmp_path / "data", [], {f"n{i}.jpg": noise_jpeg(50 + i) for i in range(3)},
                        csv_text="Image,Id\n" + rows)
    config = tmp_path / "kaggle.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "kaggle", "root": str(root)}, "detect": {"method": "threshold"}}))
    result = snakemake(tmp_path / "work", "--cores", "1", "results/data/train.parquet", configfiles=(config,), check=False)
    assert result.returncode != 0
    assert "Error in rule ingest" in result.stdout + result.stderr
    log = (tmp_path / "work" / "results" / "logs" / "ingest.log").read_text()
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        f"flukeline ingest: error: {root / 'train.csv'}: all 3 usable training row(s) have Id 'new_whale';"
        " at least one known identity is needed to match against"
    )
    assert not (tmp_path / "work" / "results" / "data" / "train.parquet").exists()


def test_config_mistakes_are_all_named_in_one_short_message(tmp_path):
    """A wrong type, an unknown key and a value outside its choices, in one override file."""
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump({"data": {"folds": "four", "on_bad_image": "ignore"}, "embed": {"epochz": 3}}))
    result = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(path,), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    message = next(line for line in output.splitlines() if line.startswith("config: "))
    assert message.split("; ") == [
        "config: data.folds: 'four' is not of type 'integer'",
        "data.on_bad_image: 'ignore' is not one of ['error', 'skip']",
        "unknown key embed.epochz (known keys here: " + ", ".join(sorted(read_schema()["properties"]["embed"]["properties"])) + ")",
    ]
    assert "Failed validating" not in output and len(output) < 3000  # no schema dump


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


def read_schema() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_unusual_images_and_a_skipped_one_go_through_detect_and_align(tmp_path):
    """The accepted images above, as train and test images of a user's data root, through the
    real DAG up to the aligned crops; a zero-byte file is skipped and logged (on_bad_image: skip)."""
    rows = [(name, f"w_{case}") for case, (name, *_) in ACCEPTED.items()]
    rows += [(f"x{i}.jpg", "w_x") for i in range(2)] + [("zero.jpg", "w_x")]
    files = {name: data for name, data, *_ in ACCEPTED.values()}
    files.update({"x0.jpg": noise_jpeg(60), "x1.jpg": noise_jpeg(61), "zero.jpg": b""})
    test_files = {f"t_{name}": data for name, data, *_ in ACCEPTED.values()}
    root = write_layout(tmp_path / "data", rows, files, test_files=test_files)
    config = tmp_path / "kaggle.yaml"
    config.write_text(yaml.safe_dump(
        # min_image_side 0: the 16x16 thumbnail must go through (tests/unit/test_ingest_hygiene.py
        # covers the small-photo check), and only the zero-byte file be skipped.
        {"data": {"source": "kaggle", "root": str(root), "on_bad_image": "skip", "min_image_side": 0},
         "detect": {"method": "threshold"}}
    ))
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", "align", configfiles=(TINY, config))

    assert pd.read_csv(work / "results" / "data" / "rejected.csv").to_dict("records") == [
        {"split": "train", "image": "zero.jpg", "problem": f"is empty (0 bytes) (train.csv line {len(BASE_TRAIN) + len(rows) + 1})"}
    ]
    assert "skipped 1 bad image row(s); see results/data/rejected.csv" in (work / "results" / "logs" / "ingest.log").read_text()
    crops = pd.read_parquet(work / "results" / "align" / "64x32" / "align.parquet")
    expected = {name for name, _ in BASE_TRAIN + rows if name != "zero.jpg"} | set(test_files)
    assert set(crops["image"]) == expected
    for crop in crops["crop_path"]:
        assert read_image_rgb(crop).shape == (32, 64, 3)


# --- safe loading --------------------------------------------------------------------------------


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_a_pickled_object_is_refused_unrun(tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "model.safetensors.checkpoint.pt"
    torch.save({"epoch": 1, "history": "[]", "digest": "d", "model": _RunsCodeWhenUnpickled(marker)}, checkpoint)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(InputError) as caught:
        resume_training_state(checkpoint, "d", model=model)
    assert str(caught.value) == (
        f"{checkpoint}: refused as a training checkpoint: not a torch file of tensors and plain values"
        " (UnpicklingError); delete it to train from the start"
    )
    assert not marker.exists()


def test_checkpoint_round_trip_still_resumes(tmp_path):
    checkpoint = tmp_path / "c.pt"
    saved, restored = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    save_training_state(checkpoint, 2, [{"epoch": 2, "loss": 0.5}], "d", model=saved)
    assert resume_training_state(checkpoint, "d", model=restored) == (2, [{"epoch": 2, "loss": 0.5}])
    assert torch.equal(saved.weight, restored.weight)


def test_no_unsafe_loading_in_the_package():
    """Every torch.load passes weights_only=True; no pickle, eval/exec or yaml.load of files."""
    source = Path(__file__).resolve().parents[2] / "src" / "flukeline"
    for path in source.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"
        for unsafe in ("import pickle", "pickle.load", "eval(", "exec(", "yaml.load(", "allow_pickle=True"):
            hits = [line for line in text.splitlines() if unsafe in line and ".eval()" not in line]
            assert not hits, f"{path.name}: {hits}"


# --- atomic writes -------------------------------------------------------------------------------


def _fail_after_partial_write(monkeypatch, target: str, name: str):
    """Make `target.name` write half a file and then fail, as a crash mid-write would."""
    def partial(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(target, name, partial)


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    table = tmp_path / "results" / "train.parquet"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), table)
    _fail_after_partial_write(monkeypatch, pd.DataFrame, "to_parquet")
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pd.DataFrame({"x": [3]}), table)
    assert pd.read_parquet(table)["x"].tolist() == [1, 2]
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pd.DataFrame({"x": [3]}), tmp_path / "results" / "new.parquet")
    assert sorted(p.name for p in table.parent.iterdir()) == ["train.parquet"]


def test_a_crash_while_saving_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.safetensors.checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    save_training_state(checkpoint, 1, [{"epoch": 1}], "d", model=model)
    _fail_after_partial_write(monkeypatch, torch, "save")
    with pytest.raises(OSError, match="disk full"):
        save_training_state(checkpoint, 2, [{"epoch": 1}, {"epoch": 2}], "d", model=model)
    assert resume_training_state(checkpoint, "d", model=torch.nn.Linear(3, 2))[0] == 1
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]


def test_a_crash_while_saving_weights_leaves_no_model_file(tmp_path, monkeypatch):
    import safetensors.torch

    weights = tmp_path / "model.safetensors"
    monkeypatch.setattr("flukeline.core.weights.save_file", lambda state, path, metadata: (Path(path).write_bytes(b"half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        save_weights(torch.nn.Linear(3, 2), weights, {"fold": 0})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("flukeline.core.weights.save_file", safetensors.torch.save_file)
    save_weights(torch.nn.Linear(3, 2), weights, {"fold": 0})
    assert read_weights(weights, tensors=False)[1] == {"fold": 0}


def test_every_writer_of_the_package_writes_atomically():
    """Files are written through flukeline.core.io's temp + rename helpers (or to a temporary name or
    an in-memory buffer); the only direct writes go into directory() outputs, which Snakemake
    deletes whole when their job fails."""
    source = Path(__file__).resolve().parents[2] / "src" / "flukeline"
    calls = ("to_parquet(", "to_csv(", ".write_text(", ".write_bytes(", "torch.save(", "save_file(", "cv2.imwrite(",
             "savefig(", "json.dump(", "np.save(", ".save(")
    into_directory_outputs = {
        ("data/demo/generate.py", ".write_bytes("),  # demo images and masks: the demo_dataset rule's directory
        ("align/warp.py", "cv2.imwrite("),  # crops (directory) and, via a temporary name, the contact sheet
        ("detect/predict.py", "cv2.imwrite("),  # mask PNGs: the detect_predict rule's directory
    }
    direct = set()
    for path in sorted(source.rglob("*.py")):
        for line in path.read_text().splitlines():
            for call in calls:
                through_helper = "write_atomic(" in line or re.search(rf"{re.escape(call)}(tmp|buffer)\b", line)
                if call in line and not through_helper and "to_csv(index=" not in line:
                    direct.add((path.relative_to(source).as_posix(), call))
    assert direct == into_directory_outputs
