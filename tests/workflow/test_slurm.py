"""The workflow on a real SLURM cluster through profiles/slurm: a one-node cluster on this machine
(tools/slurm/one-node.sh: Debian's slurmctld, slurmd and munge, one fake GPU), the small run
submitted job by job with sbatch, and a submission byte-identical to a local run's.

Needs root and apt-get to set the cluster up (it is torn down at the end of the session), or a
cluster already up (`one-node.sh status`), which is then left running. Elsewhere it skips."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake
from small_run import small_run, write_small_config

SCRIPT = REPO / "tools" / "slurm" / "one-node.sh"
PROFILE = REPO / "profiles" / "slurm"
# The local run is made with --cores 2: the same threads per job keep the results identical.
THREADS = 2
# Rules that run as SLURM jobs in the small run (the others are localrules without a command).
SUBMITTED_RULES = {
    "demo_dataset",
    "demo_contact_sheet",
    "ingest",
    "baseline_all_new_whale",
    # The references without training, scored beside the members (workflow/rules/baselines.smk).
    "baseline_pixel_embeddings",
    "baseline_zero_shot_model",
    "baseline_zero_shot_embeddings",
    "baseline_zero_shot_box_embeddings",
    "match_baseline",
    "detect_train",
    "detect_predict",
    "detect_evaluate",
    "align_transforms",
    "align_crops",
    "train_member",
    "embed_member",
    "match_member",
    "ensemble",
    "submission",
    "evaluate",
    "review",
    "decide",  # the review page shows each photo's decision (workflow/rules/decisions.smk)
}
GPU_RULES = {"train_member", "detect_train"}  # gpu: 1 in profiles/slurm

pytestmark = pytest.mark.timeout(2700)


def _sh(*command, timeout=60):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_partition():
    """The partition of a usable SLURM cluster: the one already up, or one set up for this session."""
    if _sh("bash", SCRIPT, "status").returncode == 0:
        partitions = _sh("sinfo", "-h", "-o", "%P").stdout.split()
        yield next((p.rstrip("*") for p in partitions if p.endswith("*")), partitions[0])
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster is up, and setting one up (tools/slurm/one-node.sh up) needs root")
    installed = all(
        Path(p).exists() for p in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/sbin/munged")
    )
    if not installed and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    try:
        up = _sh("bash", SCRIPT, "up", timeout=1200)
        if up.returncode != 0:
            pytest.fail(
                f"tools/slurm/one-node.sh up failed ({up.returncode}):\n{up.stdout[-2000:]}\n{up.stderr[-6000:]}"
            )
        yield up.stdout.strip().splitlines()[-1]
    finally:
        # Stop the daemons this session started, so that a later run starts clean.
        _sh("bash", SCRIPT, "down", timeout=120)


def _test_profile(folder: Path, partition: str) -> Path:
    """A second profile over profiles/slurm (later profiles replace top-level keys): the test
    cluster's partition, memory requests capped at the node's memory, THREADS per job, and
    status checks every 3 s instead of 10 (jobs here take seconds; ~15 jobs in a row)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    node = _sh("scontrol", "-o", "show", "node").stdout
    node_mb = min(int(m) for m in re.findall(r"RealMemory=(\d+)", node))
    cpus = min(int(c) for c in re.findall(r"CPUTot=(\d+)", node))
    capped = {
        rule: {key: min(value, node_mb) if key == "mem_mb" else value for key, value in resources.items()}
        for rule, resources in profile["set-resources"].items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "default-resources": {**profile["default-resources"], "slurm_partition": partition},
                "set-resources": capped,
                "max-threads": min(THREADS, cpus),
                "seconds-between-status-checks": 3,
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def slurm_run(slurm_partition, tmp_path_factory):
    """The small run through `--profile profiles/slurm`; (workdir, Snakemake's output)."""
    _, config = small_run(tmp_path_factory)  # the local run to compare with (and its config)
    workdir = tmp_path_factory.mktemp("slurm_run")
    test_profile = _test_profile(tmp_path_factory.mktemp("slurm_profile") / "test", slurm_partition)
    # Compute nodes run `python -m snakemake`: this venv must come first on the jobs' PATH
    # (sbatch passes the submitting environment on).
    env = dict(
        os.environ, PYTHONHASHSEED="0", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--profile",
        str(PROFILE),
        "--profile",
        str(test_profile),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=2400, env=env, cwd=workdir)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))
        )
        raise AssertionError(
            f"snakemake --profile profiles/slurm failed ({result.returncode}):\n{output[-8000:]}\n{logs[-8000:]}"
        )
    return workdir, output


def test_every_job_went_through_sbatch(slurm_run):
    workdir, output = slurm_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", output)
    assert submitted, output[-4000:]
    rules = {re.search(r"slurm_logs/rule_(\w+?)/", log).group(1) for _, log in submitted}
    assert rules == SUBMITTED_RULES
    assert "Finished job" in output or "steps (100%) done" in output
    for slurm_jobid, log in submitted:
        # The plugin's per-job log (kept: slurm-keep-successful-logs) is the job's own output.
        assert Path(log).is_file() and Path(log).is_relative_to(workdir / ".snakemake/slurm_logs"), log
        # SLURM itself knows the job (finished jobs stay listed for MinJobAge seconds).
        job = _sh("scontrol", "-o", "show", "job", slurm_jobid).stdout
        assert "JobState=COMPLETED" in job, job
        rule = re.search(r"slurm_logs/rule_(\w+?)/", log).group(1)
        # The training rules asked for the (fake) GPU and got it.
        assert ("gres:gpu" in job or "gres/gpu" in job) == (rule in GPU_RULES), (rule, job)


def test_submission_equals_the_local_runs_byte_for_byte(slurm_run, tmp_path_factory):
    workdir, _ = slurm_run
    local, _ = small_run(tmp_path_factory)
    assert (workdir / "results/submission.csv").read_bytes() == (local / "results/submission.csv").read_bytes()


def _planned_resources(output: str) -> dict:
    """{rule: resources line} from a dry-run's job listing."""
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, re.M)
    }


def test_profiles_plan_the_workflow_with_the_rules_resources(tmp_path):
    """Both profiles parse and plan a run (no cluster needed); the slurm profile asks for the GPU
    and its memory and time on the training rules, and leaves the rules' own values elsewhere."""
    config = write_small_config(tmp_path / "small.yaml")
    local = snakemake(
        tmp_path / "local", "--profile", str(REPO / "profiles/local"), "-n", "--forceall", configfiles=(config,)
    )
    slurm = snakemake(tmp_path / "slurm", "--profile", str(PROFILE), "-n", "--forceall", configfiles=(config,))
    planned = _planned_resources(slurm.stdout)
    assert SUBMITTED_RULES <= set(planned), sorted(planned)
    for rule in GPU_RULES:
        assert "gpu=1" in planned[rule], (rule, planned[rule])
    assert "mem_mb=16000" in planned["train_member"] and "runtime=480" in planned["train_member"]
    assert "gpu" not in planned["embed_member"] and "mem_mb=2000" in planned["embed_member"]
    assert "gpu" not in _planned_resources(local.stdout)["train_member"]
