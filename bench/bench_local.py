"""The `local` part of the benchmark suite: the ensemble with and without each local matcher
(match.local.method none, sift, aliked_lightglue, disk_lightglue) on the demo and on Omniglot,
and the matchers alone on the manta photos.

- Demo and Omniglot (seed 0): one hard-linked copy of a finished run per method
  (common.seed_workdir), with one override (the method, a common `shortlist` and keypoint budget),
  so that only the local member, the ensemble and the scores rerun. Per method: validation and
  test MAP@5, known-identity top-1 and new_whale F1 of the ensemble (and of the local member
  alone), the weight the ensemble's fit gives the local member, and its cost (pairs, seconds per
  pair and per image, wall time of its jobs from Snakemake's benchmark files). Omniglot's 64x64
  characters are matched at 128x128 (align.sizes gets the second size), as measured before:
  SIFT finds ~16 keypoints per 64x64 character.
- Mantas (tests/data/manta-demo: 4 individuals, 6 database photos, 5 queries; too few for a
  run): every query photo matched against every database photo at 300x300 by each matcher (SIFT
  at OpenCV's contrast threshold and at 0.01); an identity scores its best photo's inliers;
  rank-1 hits (chance 1 in 4) beside the zero-shot gallery's (the `real` part).

LightGlue costs ~0.1 s per pair on 2 CPU cores (measured), so the shortlist here is small
(--local-shortlist, default 10) and the same for every method, to compare like with like.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import CONFIG, environment, load_config, markdown_table, run_snakemake, seed_workdir, write_yaml
from bench.real_data import MANTAS, OMNIGLOT, OMNIGLOT_ZIP

METHODS = ("none", "sift", "aliked_lightglue", "disk_lightglue")
# The demo's 794 queries x 10 pairs take LightGlue ~25 min per method on 2 shared CPU cores: by
# default the demo gets ALIKED only; DISK is measured on Omniglot and the mantas.
DEMO_METHODS = ("none", "sift", "aliked_lightglue")
# --quick: the tiny run with SIFT only (the mantas also get ALIKED + LightGlue: 30 pairs).
QUICK_METHODS = ("none", "sift")
KEYS = ("map5", "known_top1", "new_whale_f1")


def _scores(entry: dict | None) -> dict:
    return {k: (entry or {}).get(k) for k in KEYS}


def _bench_seconds(results: Path, prefix: str) -> float:
    """Wall seconds of the jobs whose Snakemake benchmark file starts with `prefix`."""
    total = 0.0
    for path in (results / "benchmarks").glob(f"{prefix}*.tsv"):
        table = pd.read_csv(path, sep="\t")
        total += float(table["s"].iloc[-1])
    return round(total, 1)


def method_row(workdir: Path, method: str, final_round: int = 0) -> dict:
    """One method's scores, fitted weight and cost in a finished run."""
    results = workdir / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    name = f"ensemble@round{final_round}"
    row = {
        "ensemble": {
            "val": _scores(metrics["cv"]["methods"][name]),
            "test": _scores(metrics.get("test", {}).get("methods", {}).get(name)),
        }
    }
    summary = json.loads((results / "match" / f"round{final_round}" / "ensemble" / "summary.json").read_text())
    # The members' weights as the ensemble used them (fitted or configured: summary "weights").
    row["weights"] = summary.get("members", {})
    if method == "none":
        return row
    local = f"local_{method}@round{final_round}"
    row["local_alone"] = {
        "val": _scores(metrics["cv"]["methods"].get(local)),
        "test": _scores(metrics.get("test", {}).get("methods", {}).get(local)),
    }
    member = results / "match" / f"round{final_round}" / f"local_{method}" / "summary.json"
    cost = json.loads(member.read_text())["cost"]
    row["local_weight"] = next((w for n, w in row["weights"].items() if n.startswith("local_")), None)
    row["cost"] = {
        "pairs": cost["pairs"],
        "pairs_per_query": round(cost["pairs_per_query_mean"], 1),
        # None: every pair came from the cache (results/cache/local_match) of an earlier run.
        "seconds_per_pair": None if cost["seconds_per_pair"] is None else round(cost["seconds_per_pair"], 4),
        "seconds_per_image": cost["seconds_per_image_features"],
        "features_job_s": _bench_seconds(results, f"local_features_{method}_")
        + _bench_seconds(results, f"photo_features_{method}_"),
        "match_job_s": _bench_seconds(results, f"local_match_round{final_round}_{method}"),
    }
    return row


def _variants(base: Path, base_configs: list[Path], workdir: Path, methods, override, cores: int) -> dict:
    """Each method on a hard-linked copy of the finished run in `base` (reused when there)."""
    rows = {}
    for method in methods:
        folder = workdir / f"{base.name}_local_{method}"
        reused = (folder / "results").is_dir()
        if not reused:
            seed_workdir(base, folder)
        configfiles = [*base_configs, write_yaml(workdir / "configs" / f"{folder.name}.yaml", override(method))]
        # config.yaml first, as the workflow reads it (the Omniglot configs are overrides only).
        final = int(load_config([CONFIG, *configfiles])["match"]["pseudo_labels"]["rounds"])
        print(f"local: {folder.name}", flush=True)
        started = time.perf_counter()
        run_snakemake(folder, configfiles, workdir / "logs" / f"{folder.name}.log", "results/metrics.json", cores=cores)
        rows[method] = {**method_row(folder, method, final), "wall_s": round(time.perf_counter() - started, 1)}
        rows[method]["reused_folder"] = reused
        # What is done so far, should a later (slow) variant fail or be stopped.
        (workdir / f"{base.name}_rows.json").write_text(json.dumps(rows, indent=1))
    return rows


def _local_override(method: str, shortlist: int, features: int, extra: dict | None = None) -> dict:
    # The same budget for every matcher: `shortlist` global pairs and as many LNBNN identities,
    # one photo each (at most 2 x shortlist pairs per query).
    local = {
        "method": method,
        "shortlist": shortlist,
        "lnbnn_identities": shortlist,
        "photos_per_identity": 1,
        "features": features,
    }
    override = {"match": {"local": {**local, **((extra or {}).get("local", {}))}}}
    return {**{k: v for k, v in (extra or {}).items() if k != "local"}, **override}


def _mantas_matchers(methods) -> dict[str, tuple[str, dict]]:
    """Row label -> (method, extra params): SIFT at OpenCV's contrast threshold and at 0.01 (the
    manta photos are low-contrast: at 0.04 SIFT keeps a few dozen keypoints per photo)."""
    rows = {}
    for method in [m for m in methods if m != "none"]:
        if method == "sift":
            rows["sift"] = ("sift", {})
            rows["sift, sift_contrast 0.01"] = ("sift", {"sift_contrast": 0.01})
        else:
            rows[method] = (method, {})
    return rows


def mantas(methods, features: int = 500) -> dict:
    """Every query photo against every database photo, per matcher (see the module docstring)."""
    from flukeline.match.local_features import image_keypoints
    from flukeline.match.local_matchers import make_matcher

    database = [(d.name, p) for d in sorted((MANTAS / "database").iterdir()) for p in sorted(d.glob("*.png"))]
    names = {d.name.split()[1].lower(): d.name for d in (MANTAS / "database").iterdir()}
    queries = sorted((MANTAS / "test").glob("*.png"))
    out = {}
    for label, (method, extra) in _mantas_matchers(methods).items():
        params = {"features": features, **extra}
        started = time.perf_counter()
        keypoints = {str(p): image_keypoints(str(p), method, params) for p in [*queries, *(p for _, p in database)]}
        per_image = (time.perf_counter() - started) / len(keypoints)
        matcher = make_matcher(method, params, (300, 300))
        hits, started, margins = 0, time.perf_counter(), []
        for query in queries:
            prepared = matcher.prepare(*keypoints[str(query)])
            best: dict[str, int] = {}
            for identity, photo in database:
                inliers = matcher.match(prepared, keypoints[str(photo)]).inliers
                best[identity] = max(best.get(identity, 0), inliers)
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            truth = names[query.name.split("-")[0]]
            # A tie at the top is no hit: the matcher did not tell the individuals apart.
            hits += int(ranked[0][0] == truth and ranked[0][1] > ranked[1][1])
            other = max(v for k, v in best.items() if k != truth)
            margins.append({"query": query.name, "truth_inliers": best[truth], "best_other": other})
        pairs = len(queries) * len(database)
        out[label] = {
            "method": method,
            "params": params,
            "queries": len(queries),
            "rank1_hits": hits,
            "chance": 1 / len(names),
            "keypoints_median": int(np.median([len(xy) for xy, _ in keypoints.values()])),
            "seconds_per_image": round(per_image, 4),
            "seconds_per_pair": round((time.perf_counter() - started) / pairs, 4),
            "inliers": margins,
        }
    return out


def local(reference) -> tuple[dict, str]:
    """The suite's entry point (`python -m bench --only local`)."""
    shortlist, features = reference.local_shortlist, reference.local_features
    methods = QUICK_METHODS if reference.quick else METHODS
    result: dict = {"part": "local", "environment": environment(), "shortlist": shortlist, "features": features}
    result["mantas"] = mantas(("sift", "aliked_lightglue") if reference.quick else methods, features)
    reference.ensure()
    workdir = reference.workdir / "local"
    result["demo"] = _variants(
        reference.dir,
        reference.configfiles,
        workdir,
        [m for m in methods if m in DEMO_METHODS],
        lambda m: _local_override(m, shortlist, features),
        reference.cores,
    )
    omniglot_run = reference.workdir / "real" / "omniglot-seed0"
    if reference.quick or not OMNIGLOT_ZIP.is_file():
        result["omniglot_skipped"] = "--quick" if reference.quick else f"{OMNIGLOT_ZIP} is not there"
    else:
        configs = [OMNIGLOT, write_yaml(workdir / "configs" / "omniglot_seed0.yaml", {"seed": 0})]
        if not (omniglot_run / "results" / "metrics.json").is_file():
            print("local: the omniglot seed-0 run (as the real part makes it)", flush=True)
            run_snakemake(omniglot_run, configs, workdir / "logs" / "omniglot-seed0.log", cores=reference.cores)
        extra = {"align": {"sizes": [[64, 64], [128, 128]]}, "local": {"size": [128, 128]}}
        result["omniglot"] = _variants(
            omniglot_run,
            configs,
            workdir,
            methods,
            lambda m: _local_override(m, shortlist, features, extra),
            reference.cores,
        )
    return result, local_markdown(result)


def _cell(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def local_markdown(result: dict) -> str:
    parts = []
    for data in ("demo", "omniglot"):
        rows = []
        for method, row in (result.get(data) or {}).items():
            e, cost = row["ensemble"], row.get("cost", {})
            rows.append(
                [
                    method,
                    *(_cell(e[s][k]) for s in ("val", "test") for k in ("map5", "known_top1")),
                    _cell(e["test"]["new_whale_f1"]),
                    _cell(row.get("local_alone", {}).get("test", {}).get("map5")),
                    _cell(row.get("local_weight"), 2),
                    str(cost.get("pairs", "-")),
                    _cell(cost.get("seconds_per_pair"), 4),
                    _cell(cost.get("features_job_s", None) and cost["features_job_s"] + cost["match_job_s"], 0),
                ]
            )
        if rows:
            header = [
                f"{data}: ensemble with match.local.method",
                "val MAP@5",
                "val known top-1",
                "test MAP@5",
                "test known top-1",
                "test new_whale F1",
                "local alone test MAP@5",
                "fitted local weight",
                "pairs",
                "s / pair",
                "local jobs s",
            ]
            parts.append(markdown_table(header, rows))
    if result.get("omniglot_skipped"):
        parts.append(f"Omniglot skipped: {result['omniglot_skipped']}.")
    manta = result.get("mantas") or {}
    if manta:
        rows = [
            [
                m,
                f"{r['rank1_hits']} / {r['queries']}",
                _cell(r["seconds_per_image"], 4),
                _cell(r["seconds_per_pair"], 4),
            ]
            for m, r in manta.items()
        ]
        header = ["mantas: matcher alone (best photo's inliers)", "rank-1 hits", "keypoints", "s / image", "s / pair"]
        parts.append(
            markdown_table(header, rows)
            + f"\n\nChance {next(iter(manta.values()))['chance']:.2f}; a tie at the top counts as a miss."
        )
    parts.append(
        f"Shortlist {result['shortlist']} gallery images per query (and as many LNBNN identities, one photo each) "
        f"and {result['features']} keypoints per photo "
        "for every method (the demo default is SIFT with 25 and 500)."
    )
    return "\n\n".join(parts)
