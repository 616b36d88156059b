"""The scale part of `python -m bench` (`--only scale`): the default workflow on Kaggle-size
catalogues (the generator's `kaggle` preset: Kaggle 2019's identity sizes and 1050-px photos, cut
to `--scale-photos` photos each), and a new season against the largest of them.

Per size N: the catalogue is generated outside the workflow (`flukeline demo --preset kaggle
--overrides {"photos": N}`, timed apart: it is not the pipeline's cost) and run as a user's data
(`data.source: kaggle` with its annotations) with `snakemake --cores C` (the default target).
Per stage (SCALE_STAGES: bench.common.STAGES with the local member's features and matching
apart): summed wall and CPU seconds and the largest peak RSS of its jobs, from Snakemake's
benchmark files; the growth exponent b of time = a * N^b fitted per stage (least squares on log
time against log N; with two sizes, the slope between them; with three or more, also the slope
between the two largest) and flagged above 1.1. A fixed start-up (Python, torch import, model
load) makes small runs look sublinear: the exponent is an upper bound only where the start-up is
small. Sizes measured in separate invocations join with `python -m bench.bench_scale --merge`.

The new season (`--season-photos` S, against the largest size): S more test photos are generated
with the largest catalogue and held out of its run; `flukeline add-season` makes their data root,
and a hard-linked copy of the finished run reruns with it: once with the default retrain policy
(when-train-changes: nothing the models train on changed, so none retrains and only the S photos
are detected, cropped and embedded), once with `retrain: always` for the detector and the members.
Both copies' submissions are scored on the S photos against the generator's truth (MAP@5).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import (
    STAGES,
    environment,
    markdown_table,
    read_benchmarks,
    run_snakemake,
    seed_workdir,
    timed_command,
    write_part,
    write_yaml,
)

GROWTH_FLAG = 1.1  # exponents above this are flagged as faster than linear
# The stages of the scale tables: the suite's, with the local member split into its features and
# its matching (the LNBNN votes over the whole catalogue: the one stage that grows faster).
SCALE_STAGES = [
    ("local features", r"^(local_features|photo_features)"),
    ("local match", r"^local_match"),
    *[stage for stage in STAGES if stage[0] != "local features"],
]
KAGGLE_PHOTOS = 25361 + 7960
ANNOTATIONS = {"masks": "annotations/masks", "keypoints": "annotations/keypoints.csv", "boxes": "annotations/boxes.csv"}


def growth_exponent(photos: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(photos) (least squares); None below two usable sizes."""
    points = [(math.log(n), math.log(s)) for n, s in zip(photos, seconds) if n > 0 and s and s > 0]
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


def stage_times(jobs: list[dict]) -> dict:
    """Per stage (SCALE_STAGES): jobs, summed wall s, CPU s and the largest peak RSS of its jobs
    (read_benchmarks' rows, also kept in the result JSON, so older results regroup the same way)."""
    stages: dict = {}
    for job in jobs:
        name = next((n for n, pattern in SCALE_STAGES if re.match(pattern, job["job"])), "other")
        stage = stages.setdefault(name, {"jobs": 0, "wall_s_sum": 0.0, "max_rss_mb": 0.0, "cpu_s": 0.0})
        stage["jobs"] += 1
        stage["wall_s_sum"] = round(stage["wall_s_sum"] + (job["wall_s"] or 0), 2)
        stage["cpu_s"] = round(stage["cpu_s"] + (job["cpu_s"] or 0), 2)
        stage["max_rss_mb"] = max(stage["max_rss_mb"], job["max_rss_mb"] or 0)
    return stages


def _generate(folder: Path, photos: int, seed: int, workers: int) -> dict:
    """The kaggle preset's catalogue of `photos` under folder/kaggle (reused when already made)."""
    done = folder / "generated.json"
    if done.is_file():
        return json.loads(done.read_text()) | {"reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    overrides = json.dumps({"photos": photos})
    command = [sys.executable, "-m", "flukeline", "demo", "--out", str(folder / "kaggle"), "--truth"]
    command += [str(folder / "test_truth.csv"), "--preset", "kaggle", "--seed", str(seed)]
    command += ["--workers", str(workers), "--overrides", overrides]
    result = timed_command(command, folder / "generate.log")
    if result["returncode"] != 0:
        raise RuntimeError(f"generating {photos} photos failed; see {folder / 'generate.log'}")
    done.write_text(json.dumps(result))
    return result


def _hold_out(generated: Path, base: Path, season_photos: Path, n_season: int, seed: int) -> list[str]:
    """base/: the generated catalogue without `n_season` test photos (hard links), which go to
    season_photos/; returns their names."""
    test = sorted(p.name for p in (generated / "test").iterdir())
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(test, size=min(n_season, len(test) - 1), replace=False).tolist()) if n_season else []
    for folder in (base, season_photos):
        shutil.rmtree(folder, ignore_errors=True)
    (base / "test").mkdir(parents=True)
    season_photos.mkdir(parents=True)
    shutil.copy(generated / "train.csv", base / "train.csv")
    os.symlink(generated / "train", base / "train", target_is_directory=True)
    for name in test:
        os.link(generated / "test" / name, (season_photos if name in held else base / "test") / name)
    kept = set(pd.read_csv(generated / "train.csv")["Image"]) | (set(test) - set(held))
    (base / "annotations").mkdir()
    os.symlink(generated / "annotations" / "masks", base / "annotations" / "masks", target_is_directory=True)
    for name in ("keypoints.csv", "boxes.csv"):
        table = pd.read_csv(generated / "annotations" / name)
        table[table["Image"].isin(kept)].to_csv(base / "annotations" / name, index=False)
    return held


def _config(workdir: Path, name: str, root: Path, extra: dict | None = None) -> Path:
    data = {"data": {"source": "kaggle", "root": str(root), "annotations": dict(ANNOTATIONS)}}
    for section, values in (extra or {}).items():
        data.setdefault(section, {}).update(values)
    return write_yaml(workdir / "configs" / f"{name}.yaml", data)


def _run(reference, folder: Path, configs: list[Path], log: Path) -> dict:
    """The default target in `folder`; its summary with the stages' times."""
    run = run_snakemake(folder, [*reference.configfiles, *configs], log, cores=reference.cores)
    jobs = read_benchmarks(folder / "results")
    if not jobs:
        raise RuntimeError(f"no Snakemake benchmark files in {folder / 'results' / 'benchmarks'}")
    return {"run": run, "stages": stage_times(jobs), "jobs": jobs}


def _season_score(folder: Path, truth: pd.DataFrame, held: list[str]) -> dict:
    """MAP@5 and known top-1 of the submission's rows for the held-out photos."""
    from flukeline.core.metrics import NEW_WHALE, map_at_k

    submission = pd.read_csv(folder / "results" / "submission.csv").set_index("Image")
    truth = truth.set_index("Image").loc[held, "Id"]
    predicted = submission.loc[held, "Id"].tolist()
    known = truth != NEW_WHALE
    top1 = [p.split()[0] == t for p, t, k in zip(predicted, truth, known) if k]
    return {
        "n": len(held),
        "map5": round(map_at_k(truth.tolist(), predicted, 5), 4),
        "known_top1": round(float(np.mean(top1)), 4) if top1 else None,
    }


def _reuse_lines(folder: Path) -> list[str]:
    """What the season run's training and cached jobs logged (model reused or trained; cache hits)."""
    lines = []
    for log in sorted((folder / "results" / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "flukeline.core.model_reuse" in line or "from the cache" in line:
                lines.append(f"{log.stem}: {line.split(': ', 1)[-1]}")
    return lines


def scale(reference) -> tuple[dict, str]:
    sizes = sorted(reference.scale_photos)
    n_season = int(reference.season_photos)
    base_dir = reference.workdir.parent / "scale"
    result: dict = {
        "cores": reference.cores,
        "sizes": {},
        "season": None,
        "season_photos": n_season,
        "environment": environment(),
    }
    for n in sizes:
        season_here = n_season if n == sizes[-1] else 0
        top = base_dir / f"kaggle-{n}"
        generated = _generate(top / "gen", n + season_here, seed=0, workers=reference.cores)
        held = _hold_out(top / "gen" / "kaggle", top / "base", top / "season_photos", season_here, seed=0)
        config = _config(base_dir, f"base-{n}", top / "base")
        print(f"scale: {n} photos (generated in {generated['wall_s']} s)", flush=True)
        run = _run(reference, top / "run", [config], base_dir / "logs" / f"run-{n}.log")
        result["sizes"][n] = {"generate": generated, **run}
        if season_here:
            result["season"] = _season(reference, base_dir, top, held)
    return with_growth(result), scale_markdown(result)


def with_growth(result: dict) -> dict:
    """The result with `growth` per stage (over every size, and between the two largest) and of
    the whole run's wall time."""
    photos = sorted(result["sizes"], key=int)
    growth = {}
    for stage in sorted({s for size in result["sizes"].values() for s in size["stages"]}):
        walls = [result["sizes"][n]["stages"].get(stage, {}).get("wall_s_sum") for n in photos]
        cpus = [result["sizes"][n]["stages"].get(stage, {}).get("cpu_s") for n in photos]
        growth[stage] = {
            "wall": growth_exponent(list(map(int, photos)), walls),
            "cpu": growth_exponent(list(map(int, photos)), cpus),
            # Fixed start-up weighs least between the two largest sizes.
            "cpu_last_two": growth_exponent(list(map(int, photos[-2:])), cpus[-2:]) if len(photos) > 2 else None,
        }
    result["growth"] = growth
    totals = [result["sizes"][n]["run"]["wall_s"] for n in photos]
    result["growth_total_wall"] = growth_exponent(list(map(int, photos)), totals)
    return result


def merge(paths: list[Path], season_reruns: dict[str, Path] | None = None) -> dict:
    """One scale result from several runs' scale.json (sizes measured apart, e.g. the small sizes
    first and 8,000 photos later): each size keeps when and how it was measured (`measured`), its
    stages regrouped from its jobs (stage_times); the new season against the largest size is
    `season`, those against smaller sizes `earlier_seasons`. season_reruns: name -> a JSON of one
    more run of the largest size's season (a `_run` result with `score`, e.g. after a change to
    the code), shown as one more row of its table."""
    merged: dict = {"sizes": {}, "season": None, "earlier_seasons": [], "sources": []}
    seasons = []
    for path in paths:
        part = json.loads(Path(path).read_text())
        measured = {"date": part.get("environment", {}).get("date"), "command": part.get("command")}
        merged["sources"].append({"file": str(path), **measured, "environment": part.get("environment")})
        merged["cores"] = part.get("cores", merged.get("cores"))
        # A merged file keeps each size's and season's own `measured` and `against`.
        for n, size in part["sizes"].items():
            own = size.get("measured") or measured
            merged["sizes"][int(n)] = {**size, "stages": stage_times(size["jobs"]), "measured": own}
        for season in [part["season"], *part.get("earlier_seasons", [])] if part.get("season") else []:
            for name in ("reuse", "retrain"):
                if name not in season:  # measured without the retrain: always run
                    continue
                season[name]["stages"] = stage_times(season[name]["jobs"])
            against = season.get("against") or max(map(int, part["sizes"]))
            seasons.append({**season, "against": int(against), "measured": season.get("measured") or measured})
    merged["sizes"] = dict(sorted(merged["sizes"].items()))
    seasons.sort(key=lambda s: s["against"])
    if seasons:
        merged["season"], merged["earlier_seasons"] = seasons[-1], seasons[:-1]
        merged["season_photos"] = seasons[-1]["n_new"]
        reruns = merged["season"].get("reruns", {})
        reruns |= {name: json.loads(Path(path).read_text()) for name, path in (season_reruns or {}).items()}
        for rerun in reruns.values():
            rerun["stages"] = stage_times(rerun["jobs"])
        merged["season"]["reruns"] = reruns
    return with_growth(merged)


def _season(reference, base_dir: Path, top: Path, held: list[str]) -> dict:
    """The held-out photos as a new season against the finished run, without and with retraining."""
    season_root = top / "season_root"
    shutil.rmtree(season_root, ignore_errors=True)
    made = timed_command(
        [sys.executable, "-m", "flukeline", "add-season", str(top / "season_photos"), "--root", str(top / "base")]
        + ["--out", str(season_root), "--config", str(base_dir / "configs" / "season.yaml")],
        base_dir / "logs" / "add-season.log",
    )
    if made["returncode"] != 0:
        raise RuntimeError(f"add-season failed; see {made['log']}")
    truth = pd.read_csv(top / "gen" / "test_truth.csv")
    out = {"n_new": len(held), "add_season_s": made["wall_s"]}
    always = {"detect": {"model": {"retrain": "always"}}, "embed": {"retrain": "always"}}
    runs = [("reuse", None)] + ([("retrain", always)] if reference.season_retrain else [])
    for name, extra in runs:
        folder = top / f"season-{name}"
        seed_workdir(top / "run", folder)
        shutil.rmtree(folder / "results" / "benchmarks")  # only this run's jobs count
        configs = [base_dir / "configs" / "season.yaml"]
        if extra:
            configs.append(write_yaml(base_dir / "configs" / "retrain_always.yaml", extra))
        print(f"season: {len(held)} new photos, {name}", flush=True)
        run = _run(reference, folder, configs, base_dir / "logs" / f"season-{name}.log")
        out[name] = {**run, "score": _season_score(folder, truth, held), "logged": _reuse_lines(folder)}
    return out


def _measured_lines(result: dict) -> list[str]:
    """When and how each size was measured (merged results), or nothing (one run)."""
    lines = []
    for n, size in result["sizes"].items():
        measured = size.get("measured")
        if measured:
            lines.append(f"{int(n):,} photos: measured {measured['date']} with `{measured['command']}`.")
    return lines


def _season_markdown(season: dict, against) -> str:
    rows = []
    runs = {"default (when-train-changes)": season["reuse"]}
    runs |= {"retrain: always": season["retrain"]} if "retrain" in season else {}
    runs |= {name: rerun for name, rerun in season.get("reruns", {}).items()}
    for label, s in runs.items():
        rows.append(
            [
                label,
                s["run"]["wall_s"],
                s["run"]["cpu_s"],
                max((v["max_rss_mb"] for v in s["stages"].values()), default=None),
                sum(s["run"]["jobs"].values()),
                s["score"]["map5"],
                s["score"]["known_top1"],
            ]
        )
    header = ["new season", "wall s", "CPU s", "peak RSS MB (largest job)", "jobs", "MAP@5 (new)", "known top-1"]
    measured = season.get("measured")
    when = f"; measured {measured['date']}" if measured else ""
    table = (
        f"\n{season['n_new']:,} new photos against the {int(against):,}-photo catalogue (`flukeline add-season`"
        f" {season['add_season_s']} s, then a hard-linked copy of the finished run{when}):\n\n"
        + markdown_table(header, rows)
    )
    stage_rows = []
    columns = {"default": season["reuse"]}
    columns |= {"retrain: always": season["retrain"]} if "retrain" in season else {}
    columns |= {name.split(" (")[0]: rerun for name, rerun in season.get("reruns", {}).items()}
    for stage in sorted(set().union(*(run["stages"] for run in columns.values()))):
        row = [stage]
        for run in columns.values():
            v = run["stages"].get(stage, {})
            row += [v.get("wall_s_sum"), v.get("cpu_s"), v.get("max_rss_mb")]
        stage_rows.append(row)
    header = ["stage"] + [f"{k} ({n})" for n in columns for k in ("wall s", "CPU s", "RSS MB")]
    notes = [
        f"{name}: measured {r.get('environment', {}).get('date')} with `{r.get('command')}`."
        for name, r in season.get("reruns", {}).items()
    ]
    return table + "\n" + markdown_table(header, stage_rows) + "".join(f"\n{n}\n" for n in notes)


def scale_markdown(result: dict) -> str:
    """The tables of a scale result (also from its JSON, whose size keys are strings)."""
    photos = sorted(result["sizes"], key=int)
    header = ["stage"]
    for n in photos:
        header += [f"{int(n):,}: wall s", f"{int(n):,}: CPU s", f"{int(n):,}: peak RSS MB"]
    header += ["growth b (wall)", "growth b (CPU)"]
    if len(photos) > 2:
        header += [f"b (CPU) {int(photos[-2]):,} to {int(photos[-1]):,}"]
    header += [f"naive CPU s at {KAGGLE_PHOTOS:,}"]
    rows = []
    for stage, growth in result["growth"].items():
        row = [stage]
        for n in photos:
            s = result["sizes"][n]["stages"].get(stage, {})
            row += [s.get("wall_s_sum"), s.get("cpu_s"), s.get("max_rss_mb")]
        # The CPU time: the wall times of a shared machine carry other jobs' load.
        b, last_two = growth["cpu"], growth.get("cpu_last_two")
        slope = last_two if last_two is not None else b
        last = result["sizes"][photos[-1]]["stages"].get(stage, {}).get("cpu_s")
        projected = last * (KAGGLE_PHOTOS / int(photos[-1])) ** max(slope, 1.0) if slope is not None and last else None
        flag = " (above linear)" if b is not None and b > GROWTH_FLAG else ""
        wall = growth["wall"]
        row += [f"{wall:.2f}" if wall is not None else None, f"{b:.2f}{flag}" if b is not None else None]
        if len(photos) > 2:
            flag = " (above linear)" if last_two is not None and last_two > GROWTH_FLAG else ""
            row += [f"{last_two:.2f}{flag}" if last_two is not None else None]
        rows.append(row + [projected])
    totals = ["whole run (wall of snakemake)"]
    for n in photos:
        run = result["sizes"][n]["run"]
        totals += [run["wall_s"], run["cpu_s"], run["peak_rss_mb"]]
    totals += [result["growth_total_wall"], None] + ([None] if len(photos) > 2 else []) + [None]
    rows.append(totals)
    table = markdown_table(header, rows)
    notes = [
        f"`snakemake --cores {result['cores']}` (default target) on the kaggle preset cut to each size (data.source"
        " kaggle with its annotations; generation timed apart: "
        + ", ".join(f"{int(n):,}: {result['sizes'][n]['generate']['wall_s']} s" for n in photos)
        + ").",
        "Stage wall s = the sum of its jobs' wall time (jobs may overlap); peak RSS = its largest job's; the whole"
        " run's peak RSS is Snakemake's own process tree's largest single process (os.wait4).",
        "growth b: slope of log time against log photos (least squares over the sizes; with three sizes or more"
        " also between the two largest, where fixed start-up weighs least), flagged above 1.1 on CPU time (the"
        " wall times of a shared machine carry other jobs' load); the naive projection scales the largest size's"
        " CPU s by (33,321 / N)^max(b, 1), b between the two largest sizes where there are three, and ignores"
        " fixed start-up costs and search-structure changes (the local member's index turns approximate above"
        " match.local.exact_below descriptors).",
    ]
    if result.get("season"):
        table += _season_markdown(result["season"], result["season"].get("against", photos[-1]))
    for season in result.get("earlier_seasons", []):
        table += _season_markdown(season, season["against"])
    measured = _measured_lines(result)
    head = ("\n".join(measured) + "\n\n") if measured else ""
    return head + table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main(argv=None) -> int:
    """`python -m bench.bench_scale --merge A.json B.json --out DIR`: one scale.json / scale.md of
    several runs' results (merge)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--merge", nargs="+", type=Path, required=True, help="scale.json files, oldest first")
    parser.add_argument("--out", type=Path, required=True, help="folder for scale.json and scale.md")
    parser.add_argument(
        "--season-rerun",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON"),
        help="one more run of the largest size's season (row NAME of its table)",
    )
    args = parser.parse_args(argv)
    result = merge(args.merge, {name: Path(path) for name, path in args.season_rerun})
    write_part(args.out, "scale", result, scale_markdown(result))
    print(scale_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
