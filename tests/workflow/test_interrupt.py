"""A workflow killed mid-training resumes from its last checkpoint and ends with the same
submission as an uninterrupted run (issue 10)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from conftest import REPO, TINY, snakemake


def _wait_for_first_checkpoint(workdir: Path, process: subprocess.Popen, timeout: float) -> Path:
    """The first member checkpoint (written at the end of epoch 1, while epoch 2 starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(workdir.glob("results/embed/round0/*/fold*/model.safetensors.checkpoint.pt"))
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"snakemake ended ({process.returncode}) before any member checkpoint was written")
        time.sleep(0.05)
    raise AssertionError(f"no member checkpoint within {timeout} s")


def test_killed_training_resumes_and_gives_the_same_submission(tiny_run, tmp_path):
    """SIGKILL the whole workflow (Snakemake and its jobs, one process group) while a member
    trains epoch 2, rerun it with --rerun-incomplete, and compare with the shared tiny run.

    This one extra run also stands for determinism: it is a second, independent run of the tiny
    preset with the same seed (its data, detector, alignment, every other member, match and
    pseudo-label round run from scratch in new processes), so its submission.csv being
    byte-identical to the reference run's shows two runs agree byte for byte; a nondeterministic
    stage would break the equality just the same. The one job it resumes is the one place where
    the two runs differ, which is what the resume must not change."""
    reference_dir, _ = tiny_run
    workdir = tmp_path / "killed"
    workdir.mkdir()
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(TINY),
        "--cores",
        "2",
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    with open(tmp_path / "first_attempt.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            checkpoint = _wait_for_first_checkpoint(workdir, process, timeout=900)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    killed_epoch = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    epochs = int(yaml.safe_load(TINY.read_text())["embed"]["epochs"])
    assert 1 <= killed_epoch < epochs
    model = checkpoint.with_name("model.safetensors")
    assert not model.exists()  # killed before the member finished

    snakemake(workdir, "--unlock")  # the killed Snakemake left its lock behind
    snakemake(workdir, "--cores", "2", "--rerun-incomplete")

    member, fold = checkpoint.parts[-3], checkpoint.parts[-2].removeprefix("fold")
    train_log = (workdir / "results" / "logs" / f"train_round0_{member}_fold{fold}.log").read_text()
    resumed = re.findall(r"resuming from (\S+) after epoch (\d+)", train_log)
    assert resumed and Path(resumed[0][0]).name == checkpoint.name and int(resumed[0][1]) == killed_epoch
    # core.training logs "<member> fold <k> epoch <e>/<epochs>: loss ...".
    trained = [int(n) for n in re.findall(r"epoch (\d+)/\d+: loss", train_log)]
    assert trained == list(range(int(resumed[0][1]) + 1, epochs + 1))  # no epoch before the checkpoint reran
    assert not checkpoint.exists()  # removed once the member finished

    submission = (workdir / "results" / "submission.csv").read_bytes()
    assert submission == (reference_dir / "results" / "submission.csv").read_bytes()
