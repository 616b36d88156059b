"""Messy field data (issue 10) as the user sees it through Snakemake: a dataset the workflow must
refuse with the reason, config mistakes named in one short message, and unusual images (and a skipped
one) through the real DAG up to the aligned crops. Ingest of each bad-input case, safe loading and
atomic writes are tested in tests/unit/test_robustness_inputs.py and
tests/unit/test_safe_loading_and_atomic_writes.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from conftest import TINY, snakemake
from helpers_messy_inputs import ACCEPTED, BASE_TRAIN, noise_jpeg, write_layout

from flukeline.core.images import read_image_rgb

# --- whole-dataset problems, as the user sees them (Snakemake) ------------------------------------


def ingest_through_snakemake(tmp_path, root):
    """Snakemake's ingest of a user's Kaggle-layout data root (detect threshold, one core), not
    stopping at a failure: the completed process."""
    config = tmp_path / "kaggle.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"source": "kaggle", "root": str(root)}, "detect": {"method": "threshold"}})
    )
    return snakemake(
        tmp_path / "work", "--cores", "1", "results/data/train.parquet", configfiles=(config,), check=False
    )


def test_only_new_whale_training_set_stops_the_workflow_with_the_reason(tmp_path):
    """Through Snakemake on a user's data root: the ingest job fails, its log says why."""
    rows = "".join(f"n{i}.jpg,new_whale\n" for i in range(3))
    root = write_layout(
        tmp_path / "data", [], {f"n{i}.jpg": noise_jpeg(50 + i) for i in range(3)}, csv_text="Image,Id\n" + rows
    )
    result = ingest_through_snakemake(tmp_path, root)
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
        "unknown key embed.epochz (known keys here: "
        + ", ".join(sorted(read_schema()["properties"]["embed"]["properties"]))
        + ")",
    ]
    assert "Failed validating" not in output and len(output) < 3000  # no schema dump


def read_schema() -> dict:
    return yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml").read_text()
    )


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
    config.write_text(
        yaml.safe_dump(
            # min_image_side 0: the 16x16 thumbnail must go through (tests/unit/test_ingest_hygiene.py
            # covers the small-photo check), and only the zero-byte file be skipped.
            {
                "data": {"source": "kaggle", "root": str(root), "on_bad_image": "skip", "min_image_side": 0},
                "detect": {"method": "threshold"},
            }
        )
    )
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", "align", configfiles=(TINY, config))

    assert pd.read_csv(work / "results" / "data" / "rejected.csv").to_dict("records") == [
        {
            "split": "train",
            "image": "zero.jpg",
            "problem": f"is empty (0 bytes) (train.csv line {len(BASE_TRAIN) + len(rows) + 1})",
        }
    ]
    assert (
        "skipped 1 bad image row(s); see results/data/rejected.csv"
        in (work / "results" / "logs" / "ingest.log").read_text()
    )
    crops = pd.read_parquet(work / "results" / "align" / "64x32" / "align.parquet")
    expected = {name for name, _ in BASE_TRAIN + rows if name != "zero.jpg"} | set(test_files)
    assert set(crops["image"]) == expected
    for crop in crops["crop_path"]:
        assert read_image_rgb(crop).shape == (32, 64, 3)


def test_a_failing_ingest_ends_the_console_with_the_reason(tmp_path):
    """A train.csv naming a file that is not an image: the console's last 5 lines hold the exact
    reason (the Snakefile's onerror), and the default profile printed the job's log above them."""
    root = write_layout(tmp_path / "data", [("phone.heic", "w_a")], {"phone.heic": b"not an image at all"})
    result = ingest_through_snakemake(tmp_path, root)
    assert result.returncode != 0
    console = (result.stdout + result.stderr).strip().splitlines()
    reason = "train.csv line 5: image 'phone.heic' is not a recognised image file"
    assert any(line.strip() == reason for line in console[-5:]), console[-12:]
    assert "Flukeline: rule ingest failed (log: results/logs/ingest.log):" in console[-8:]
    assert "Logfile results/logs/ingest.log:" in console  # show-failed-logs, from profiles/default
