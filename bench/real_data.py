"""The `real` part of the benchmark suite: the workflow on real photos instead of the generator's.

- Omniglot (../shared/data/omniglot, MIT): the omniglot preset, one run per split seed, each
  scored like any run (results/metrics.json): the references without training (all-new_whale,
  raw-pixel 1-NN, zero-shot 1-NN), every member and the ensemble, on the validation fold and on
  the held-out test identities, MAP@5 and known-identity top-1.
- The manta photos (tests/data/manta-demo, Apache-2.0): too few for a workflow run (4 individuals,
  6 photos), so `gallery-new` + `add` + `identify`, the zero-shot path a user starts with: how
  many of the 5 queries get their individual at rank 1 (chance: 1 in 4).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import REPO, markdown_table, run_snakemake, write_yaml

OMNIGLOT = REPO / "workflow" / "presets" / "omniglot.yaml"
OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
MANTAS = REPO / "tests" / "data" / "manta-demo"
SEEDS, QUICK_SEEDS = (0, 1), (0,)
# --quick: a few hundred characters and one epoch; the rows are complete, the numbers meaningless.
QUICK_OVERRIDE = {"data": {"omniglot": {"max_images": 240}}, "embed": {"epochs": 1}}
SCORES = ("map5", "known_top1", "top1")


def _rows(metrics: dict) -> dict[str, dict]:
    """Method -> {val: scores, test: scores}: the references first, then the final round's members
    and its ensemble."""
    cv, test = metrics["cv"], metrics.get("test", {})
    final = max(int(name.rpartition("@round")[2]) for name in cv["methods"])

    def pick(entry):
        return {key: entry.get(key) for key in SCORES}

    rows = {"all-new_whale": {"val": pick(cv["all_new_whale"]), "test": pick(test.get("all_new_whale", {}))}}
    for name, entry in cv.get("baselines", {}).items():
        rows[name] = {"val": pick(entry), "test": pick(test.get("baselines", {}).get(name, {}))}
    members = sorted(n for n in cv["methods"] if n.endswith(f"@round{final}") and not n.startswith("ensemble@"))
    for name in [*members, f"ensemble@round{final}"]:
        rows[name] = {"val": pick(cv["methods"][name]), "test": pick(test.get("methods", {}).get(name, {}))}
    return rows


def omniglot(workdir: Path, quick: bool, cores: int) -> dict:
    """One omniglot-preset run per seed in <workdir>/omniglot-seed<s>; its rows and wall time."""
    runs = {}
    for seed in QUICK_SEEDS if quick else SEEDS:
        folder = workdir / f"omniglot-seed{seed}"
        configs = [OMNIGLOT, write_yaml(workdir / "configs" / f"omniglot_seed{seed}.yaml", {"seed": seed})]
        if quick:
            configs.append(write_yaml(workdir / "configs" / "omniglot_quick.yaml", QUICK_OVERRIDE))
        run = run_snakemake(folder, configs, workdir / "logs" / f"omniglot-seed{seed}.log", cores=cores)
        metrics = json.loads((folder / "results" / "metrics.json").read_text())
        runs[f"seed{seed}"] = {"wall_s": run["wall_s"], "rows": _rows(metrics), "warnings": metrics.get("warnings", [])}
    return runs


def _flukeline(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "flukeline", *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"flukeline {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def mantas(workdir: Path) -> dict:
    """gallery-new (zero-shot mobilenetv2_100, whole photos at 224x224) + add per individual +
    identify the 5 queries: rank-1 hits against the individual their file name names."""
    gallery = workdir / "manta-gallery"
    _flukeline("gallery-new", str(gallery), "--backbone", "mobilenetv2_100", "--pretrained", "imagenet")
    for individual in sorted((MANTAS / "database").iterdir()):
        _flukeline(
            "add", *map(str, sorted(individual.glob("*.png"))), "--id", individual.name, "--gallery", str(gallery)
        )
    queries = sorted((MANTAS / "test").glob("*.png"))
    csv = workdir / "manta-identify.csv"
    _flukeline("identify", *map(str, queries), "--gallery", str(gallery), "--out", str(csv))
    import pandas as pd

    lists = pd.read_csv(csv, dtype=str, keep_default_na=False)
    names = {d.name.split()[1].lower(): d.name for d in (MANTAS / "database").iterdir()}
    hits = 0
    for query in queries:
        truth = names[query.name.split("-")[0]]
        first = lists[(lists["photo"] == str(query)) & (lists["rank"] == "1")]["id"]
        hits += int(len(first) > 0 and first.iloc[0] == truth)
    return {"queries": len(queries), "rank1_hits": hits, "chance": 1 / len(names)}


def real(reference) -> tuple[dict, str]:
    """The suite's entry point (`python -m bench --only real`)."""
    workdir = reference.workdir / "real"
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"omniglot": None, "mantas": mantas(workdir)}
    if OMNIGLOT_ZIP.is_file():
        result["omniglot"] = omniglot(workdir, reference.quick, reference.cores)
    else:
        result["omniglot_skipped"] = f"{OMNIGLOT_ZIP} is not there (../shared beside the checkout)"
    return result, real_markdown(result)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def real_markdown(result: dict) -> str:
    parts = []
    for seed, run in (result.get("omniglot") or {}).items():
        rows = [
            [name, *(_cell(row[split].get(key)) for split in ("val", "test") for key in ("map5", "known_top1"))]
            for name, row in run["rows"].items()
        ]
        header = ["Omniglot " + seed, "val MAP@5", "val known top-1", "test MAP@5", "test known top-1"]
        parts.append(
            markdown_table(header, rows)
            + f"\n\nWhole DAG {run['wall_s']:.0f} s."
            + "".join(f"\nWarning: {w}" for w in run["warnings"])
        )
    if result.get("omniglot_skipped"):
        parts.append(f"Omniglot skipped: {result['omniglot_skipped']}.")
    manta = result["mantas"]
    parts.append(
        f"Mantas (gallery-new, zero-shot mobilenetv2_100): {manta['rank1_hits']} of {manta['queries']} queries "
        f"with their individual at rank 1 (chance {manta['chance']:.2f})."
    )
    return "\n\n".join(parts)
