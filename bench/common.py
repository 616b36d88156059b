"""Helpers shared by the benchmark suite (`python -m bench`): configs, timed commands with peak
RSS, Snakemake runs in a work folder, work folders seeded from a finished run, Snakemake's
per-job benchmark files, the machine's description and Markdown tables."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.yaml"


# ------------------------------------------------------------------------------------ configs


def deep_merge(base: dict, override: dict) -> dict:
    """Snakemake's --configfile semantics: dicts merge recursively, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(configfiles) -> dict:
    """The config the workflow sees with these --configfile arguments (config.yaml first)."""
    config: dict = {}
    for path in configfiles:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- timed commands


def timed_command(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `command` with stdout+stderr to `log`; wall seconds, exit code, and the peak RSS (MB)
    of the process and its waited-for descendants (os.wait4's rusage of this child only)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": round(wall, 2),
        "returncode": process.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "log": str(log),
    }


def run_snakemake(workdir: Path, configfiles, log: Path, *targets: str, cores: int = 2) -> dict:
    """The repo's workflow in `workdir` with these config files; timed_command's result plus the
    jobs Snakemake planned (rule -> count, from its 'Job stats' table; {} when nothing to do)."""
    # Targets before the options: --configfile takes every argument after it.
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--rerun-incomplete",
        "--configfile",
        *map(str, configfiles),
    ]
    result = timed_command(command, log, env=dict(os.environ, PYTHONHASHSEED="0"))
    text = Path(log).read_text(errors="replace")
    if result["returncode"] != 0:
        raise RuntimeError(f"snakemake failed in {workdir} (exit {result['returncode']}); log {log}:\n{text[-3000:]}")
    result["jobs"] = planned_jobs(text)
    result["nothing_to_do"] = "Nothing to be done" in text
    return result


def planned_jobs(snakemake_output: str) -> dict[str, int]:
    """rule -> job count from the first 'Job stats:' table Snakemake printed."""
    block = snakemake_output.split("Job stats:", 1)
    if len(block) < 2:
        return {}
    jobs = {}
    for line in block[1].splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if not match or match.group(1) == "total":
            break
        jobs[match.group(1)] = int(match.group(2))
    return jobs


# ---------------------------------------------------------------- work folders from a finished run


def seed_workdir(reference: Path, workdir: Path) -> None:
    """Make `workdir` a copy of the finished run in `reference` that Snakemake sees as up to date,
    so that a changed config reruns only the jobs it touches. Results and the data are hard links
    (the flukeline commands and Snakemake replace outputs, they never write into them); logs,
    Snakemake's benchmark files and its metadata are real copies, as those are written in place."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in ("results", "resources"):
        if (reference / name).is_dir():
            shutil.copytree(
                reference / name,
                workdir / name,
                copy_function=os.link,
                symlinks=True,
                ignore=shutil.ignore_patterns("logs", "benchmarks") if name == "results" else None,
            )
    for name in ("results/logs", "results/benchmarks", ".snakemake/metadata", ".snakemake/log"):
        if (reference / name).is_dir():
            shutil.copytree(reference / name, workdir / name)


# ------------------------------------------------------------------ Snakemake benchmark files


def read_benchmarks(results: Path) -> list[dict]:
    """One row per job from results/benchmarks/*.tsv: job, wall s, max RSS (MB), CPU s, mean load."""
    rows = []
    for path in sorted((results / "benchmarks").glob("*.tsv")):
        lines = path.read_text().splitlines()
        if len(lines) < 2:
            continue
        record = dict(zip(lines[0].split("\t"), lines[-1].split("\t")))

        def number(key, record=record):
            try:
                return round(float(record[key]), 2)
            except (KeyError, ValueError):  # '-' when Snakemake could not measure
                return None

        rows.append(
            {
                "job": path.stem,
                "wall_s": number("s"),
                "max_rss_mb": number("max_rss"),
                "cpu_s": number("cpu_time"),
                "mean_load": number("mean_load"),
            }
        )
    return rows


def first_snakemake_wall(workdir: Path) -> dict | None:
    """Start, end and wall seconds of the first Snakemake run in workdir (the log's name is its
    start time, its modification time the end), for a run this process did not time itself."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    start = dt.datetime.strptime(logs[0].name.split(".")[0], "%Y-%m-%dT%H%M%S")
    end = dt.datetime.fromtimestamp(logs[0].stat().st_mtime)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(timespec="seconds"),
        "wall_s": round((end - start).total_seconds(), 1),
        "log": str(logs[0]),
    }


# -------------------------------------------------------------------------------- environment


def environment() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)),
        "cores_visible": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "git_commit": commit.stdout.strip() or None,
    }


# Stages of the workflow, by job name (a benchmark file's stem), for the per-stage tables.
STAGES = [
    ("baselines", r"^(baseline_|match_baseline)"),
    ("data", r"^(demo_|omniglot_|ingest|data_)"),
    ("detect", r"^detect"),
    ("align", r"^align"),
    ("train", r"^train_"),
    ("embed", r"^embed_"),
    ("local features", r"^local_"),
    ("match", r"^(match_|ensemble|submission|evaluate|decide)"),
    ("reports", r"^(gallery|review|metrics_table|report)"),
]


# ---------------------------------------------------------------------------------- output


def markdown_table(header: list[str], rows: list[list], right_from: int = 1) -> str:
    """A GitHub table; columns from `right_from` on are right-aligned (numbers)."""

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < right_from else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_part(out: Path, name: str, result: dict, table: str) -> None:
    """bench/results/<name>.json and <name>.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(table)
