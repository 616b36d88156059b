"""Safe loading of checkpoints (no pickled code runs) and atomic writes of internal files (issue 10):
a crash mid-write leaves the previous file and no temporary."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from flukeline.core.checkpoint import resume_training_state, save_training_state
from flukeline.core.errors import InputError
from flukeline.core.io import write_parquet_atomic
from flukeline.core.model_file import read_weights, save_weights

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
    monkeypatch.setattr(
        "flukeline.core.model_file.save_file", lambda state, path, metadata: (Path(path).write_bytes(b"half"), 1 / 0)
    )
    with pytest.raises(ZeroDivisionError):
        save_weights(torch.nn.Linear(3, 2), weights, {"fold": 0})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("flukeline.core.model_file.save_file", safetensors.torch.save_file)
    save_weights(torch.nn.Linear(3, 2), weights, {"fold": 0})
    assert read_weights(weights, tensors=False)[1] == {"fold": 0}


def test_every_writer_of_the_package_writes_atomically():
    """Files are written through flukeline.core.io's temp + rename helpers (or to a temporary name or
    an in-memory buffer); the only direct writes go into directory() outputs, which Snakemake
    deletes whole when their job fails."""
    source = Path(__file__).resolve().parents[2] / "src" / "flukeline"
    calls = (
        "to_parquet(",
        "to_csv(",
        ".write_text(",
        ".write_bytes(",
        "torch.save(",
        "save_file(",
        "cv2.imwrite(",
        "savefig(",
        "json.dump(",
        "np.save(",
        ".save(",
    )
    into_directory_outputs = {
        ("data/demo/generate.py", ".write_bytes("),  # demo images and masks: the demo_dataset rule's directory
        ("align/warp.py", "cv2.imwrite("),  # crops (directory) and, via a temporary name, the contact sheet
        ("detect/predict.py", ".write_bytes("),  # mask PNGs (new or from the cache): detect_predict's directory
        ("align/crops.py", ".write_bytes("),  # crops from the per-photo cache: the align_crops rule's directory
    }
    direct = set()
    for path in sorted(source.rglob("*.py")):
        for line in path.read_text().splitlines():
            for call in calls:
                through_helper = "write_atomic(" in line or re.search(rf"{re.escape(call)}(tmp|buffer)\b", line)
                if call in line and not through_helper and "to_csv(index=" not in line:
                    direct.add((path.relative_to(source).as_posix(), call))
    assert direct == into_directory_outputs
