"""`--cores` above the machine's CPUs (README's `--cores 8` on a laptop): the dry run of the real
Snakefile, pinned to one CPU with taskset, declares threads scaled so that heavy jobs queue."""

import re
import subprocess
import sys

from conftest import REPO, TINY


def _dry_run_threads(tmp_path, cores: int) -> tuple[dict[str, set[int]], str]:
    command = ["taskset", "-c", "0", sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["--directory", str(tmp_path), "--configfile", str(TINY), "-n", "--cores", str(cores)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    threads: dict[str, set[int]] = {}
    # Each planned job is a block "rule NAME:" ... with a "threads: N" line when N > 1.
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        name = re.match(r"(?:local)?rule (\w+):", block)
        if name:
            count = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
            threads.setdefault(name.group(1), set()).add(int(count.group(1)) if count else 1)
    return threads, result.stderr


def test_cores_above_the_cpus_make_each_heavy_job_take_the_whole_budget(tmp_path):
    threads, stderr = _dry_run_threads(tmp_path / "eight", 8)
    assert "--cores 8 on a machine with 1 CPUs: jobs are scheduled as on 1" in stderr
    # One CPU: every rule that declares threads takes all 8 of the budget, so no two run at once.
    for rule in ("train_member", "detect_train", "embed_member", "align_crops", "ingest"):
        assert threads[rule] == {8}, (rule, threads.get(rule))


def test_cores_at_the_cpus_keep_the_rules_threads(tmp_path):
    threads, stderr = _dry_run_threads(tmp_path / "one", 1)
    assert "jobs are scheduled as on" not in stderr
    assert threads["train_member"] == {1}


def test_commands_without_cores_still_parse(tmp_path):
    # --unlock, --report and cluster profiles give no --cores; workflow.cores raises there.
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    result = subprocess.run(
        [*command, "--configfile", str(TINY), "--unlock"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Unlocked working directory" in result.stdout + result.stderr
