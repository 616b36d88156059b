"""The parts of `python -m bench`: accuracy (methods, baselines, ablations), speed (per stage),
incremental (reruns) and search (bench_search at 100k / 1M). Each returns (result, Markdown)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from bench import bench_detect, bench_search
from bench.common import (
    CONFIG,
    REPO,
    STAGES,
    environment,
    first_snakemake_wall,
    load_config,
    markdown_table,
    read_benchmarks,
    run_snakemake,
    seed_workdir,
    timed_command,
    write_yaml,
)
from flukeline.evaluate.scores import cv_summary, score_submission

TINY = REPO / "workflow" / "presets" / "tiny.yaml"
# --quick: the tiny preset cut to one small member, one epoch and no pseudo-label round, so that
# every part runs end to end in a few minutes on 2 cores (numbers meaningless, rows complete).
QUICK_OVERRIDE = {
    "embed": {
        "active_members": ["lcnet4"],
        "epochs": 1,
        "members": {"lcnet4": {"swa": {"epochs": 0}, "staged": {"epochs": 0}}},
    },
    "match": {"pseudo_labels": {"rounds": 0}},
}
METRIC_KEYS = ("map5", "top1", "new_whale_precision", "new_whale_recall", "new_whale_f1", "n")


class Reference:
    """The reference run: the demo DAG (or the tiny one with --quick) in <workdir>/reference."""

    def __init__(
        self,
        workdir: Path,
        quick: bool,
        seed_from: Path | None,
        cores: int,
        config: Path = CONFIG,
        readme_cores: int = 0,
    ):
        self.workdir, self.quick, self.seed_from, self.cores = workdir, quick, seed_from, cores
        self.readme_cores = readme_cores
        self.dir = workdir / "reference"
        # Snapshots, passed as --configfile to every run of this invocation: an edit of the repo's
        # config.yaml while the suite runs (it takes an hour) cannot leak into some runs only.
        sources = [config] + ([TINY] if quick else [])
        self.configfiles = [
            write_yaml(workdir / "configs" / f"{i}_{Path(p).name}", load_config([p])) for i, p in enumerate(sources)
        ]
        if quick:
            self.configfiles.append(write_yaml(workdir / "configs" / "quick_override.yaml", QUICK_OVERRIDE))
        self.config = load_config(self.configfiles)
        self.run: dict | None = None

    def ensure(self) -> dict:
        """Run (or complete) the reference DAG once; a finished run there makes this a no-op."""
        if self.run is None:
            if self.seed_from is not None and not (self.dir / "results").exists():
                seed_workdir(self.seed_from, self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            self.run = run_snakemake(
                self.dir, self.configfiles, self.workdir / "logs" / "reference.log", cores=self.cores
            )
            print(f"reference run: {self.run['wall_s']} s, jobs {sum(self.run['jobs'].values())}", flush=True)
        return self.run


# ----------------------------------------------------------------------------------- accuracy


def _toggle_overrides(config: dict) -> dict[str, tuple[str, dict]]:
    """Ablation name -> (what changes, config override), each relative to the reference config."""
    flip = bool(config["embed"].get("flip_as_new_identity", True))
    fusion = bool(config["match"].get("flip_fusion", True))
    rounds = int(config["match"]["pseudo_labels"]["rounds"])
    # Only where the reference starts from ImageNet: the other way round would need offline weights
    # for every member's backbone (the quick preset's LCNet has none).
    imagenet = (
        {
            "no_imagenet": (
                "embed.pretrained none (reference imagenet): every member from scratch, same epochs",
                {"embed": {"pretrained": "none"}},
            )
        }
        if config["embed"].get("pretrained") == "imagenet"
        else {}
    )
    return {
        # Every fit rejected (its residual is above ~0): each image gets the box transform, i.e. the
        # detector's box crop instead of the landmark-aligned crop (align.parquet method 'box').
        "no_alignment": (
            "align.max_residual 1e-9: box crops only (no landmark alignment)",
            {"align": {"max_residual": 1e-9}},
        ),
        "flip_as_new_identity": (
            f"embed.flip_as_new_identity {str(not flip).lower()} (reference {str(flip).lower()})",
            {"embed": {"flip_as_new_identity": not flip}},
        ),
        "flip_fusion": (
            f"match.flip_fusion {str(not fusion).lower()} (reference {str(fusion).lower()})",
            {"match": {"flip_fusion": not fusion}},
        ),
        "pseudo_labels": (
            f"match.pseudo_labels.rounds {1 if rounds == 0 else 0} (reference {rounds})",
            {"match": {"pseudo_labels": {"rounds": 1 if rounds == 0 else 0}}},
        ),
        **imagenet,
    }


def _truth_table(workdir: Path, config: dict) -> pd.DataFrame | None:
    if config["data"]["source"] != "demo":
        return None
    path = (
        workdir / "resources" / "demo" / f"{config['data']['demo']['preset']}-seed{config['seed']}" / "test_truth.csv"
    )
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _scores(val: pd.DataFrame, test: pd.DataFrame | None, truth: pd.DataFrame | None) -> dict:
    """Validation (and, with the truth, test) MAP@5, top-1, new_whale precision/recall/F1."""
    result = {"val": {k: cv_summary(val)[k] for k in METRIC_KEYS}}
    if truth is not None and test is not None:
        submission = pd.DataFrame({"Image": test["image"], "Id": test["predicted"]})
        result["test"] = {k: score_submission(submission, truth)[k] for k in METRIC_KEYS}
    return result


def _landmark_share(workdir: Path) -> float | None:
    path = workdir / "results" / "align" / "align.parquet"
    return round(float((pd.read_parquet(path)["method"] == "landmarks").mean()), 4) if path.exists() else None


def scored_outputs(config: dict) -> list[str]:
    """The prediction files score_run reads: an ablation builds these and not the reports."""
    final = int(config["match"]["pseudo_labels"]["rounds"])
    return [
        f"results/match/round{final}/{name}/{split}_predictions.parquet"
        for name in sorted(config["embed"]["active_members"]) + ["ensemble"]
        for split in ("val", "test")
    ]


def score_run(workdir: Path, config: dict) -> dict:
    """Scores of every member and the ensemble of the final pseudo-label round of a finished run."""
    final = int(config["match"]["pseudo_labels"]["rounds"])
    truth = _truth_table(workdir, config)
    methods = {}
    for name in sorted(config["embed"]["active_members"]) + ["ensemble"]:
        folder = workdir / "results" / "match" / f"round{final}" / name
        methods[name] = _scores(
            pd.read_parquet(folder / "val_predictions.parquet"),
            pd.read_parquet(folder / "test_predictions.parquet"),
            truth,
        )
    pseudo = workdir / "results" / "match" / "round0" / "pseudo_labels.parquet"
    return {
        "final_round": final,
        "methods": methods,
        "landmark_share": _landmark_share(workdir),
        "pseudo_labels_round0": len(pd.read_parquet(pseudo)) if pseudo.exists() else None,
    }


def _all_new_whale(workdir: Path, config: dict) -> dict:
    """The all-new_whale baseline (new_whale + the 4 most frequent ids) on the members' folds."""
    val = pd.read_parquet(workdir / "results" / "baseline" / "all_new_whale_val_predictions.parquet")
    val = val[val["fold"].isin(config["embed"]["cv_folds"])]
    submission = pd.read_csv(
        workdir / "results" / "baseline" / "all_new_whale_submission.csv", dtype=str, keep_default_na=False
    )
    return _scores(val, submission.rename(columns={"Image": "image", "Id": "predicted"}), _truth_table(workdir, config))


def _classifier_baseline(reference: Reference) -> dict:
    """The seed-000-style softmax classifier with the first member's backbone, init, size and epochs."""
    config, ref = reference.config, reference.dir
    first = config["embed"]["active_members"][0]
    member = {**config["embed"], **config["embed"]["members"][first]}
    out = reference.workdir / "classifier_baseline"
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "flukeline",
        "classifier-baseline",
        "--train",
        str(ref / "results/data/train.parquet"),
        "--test",
        str(ref / "results/data/test.parquet"),
        "--backbone",
        member["backbone"],
        "--pretrained",
        str(member.get("pretrained", "none")),
        "--size",
        f"{member['size'][0]}x{member['size'][1]}",
        "--fold",
        str(min(config["embed"]["cv_folds"])),
        "--epochs",
        str(member["epochs"]),
        "--seed",
        str(config["seed"]),
        "--threads",
        str(reference.cores),
        "--val-predictions",
        str(out / "val_predictions.parquet"),
        "--test-predictions",
        str(out / "test_predictions.parquet"),
        "--out",
        str(out / "info.json"),
    ]
    # Trained once per reference data: a later invocation on the same work folder reuses it.
    done = out / "info.json"
    if done.exists() and done.stat().st_mtime > (ref / "results/data/train.parquet").stat().st_mtime:
        timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else None
    else:
        timing = timed_command(command, reference.workdir / "logs" / "classifier_baseline.log")
        if timing["returncode"] != 0:
            raise RuntimeError(f"classifier-baseline failed; log {timing['log']}")
        (out / "timing.json").write_text(json.dumps(timing))
    scores = _scores(
        pd.read_parquet(out / "val_predictions.parquet"),
        pd.read_parquet(out / "test_predictions.parquet"),
        _truth_table(ref, config),
    )
    return {
        **scores,
        "backbone": member["backbone"],
        "pretrained": member.get("pretrained", "none"),
        "size": member["size"],
        "epochs": member["epochs"],
        "timing": timing,
    }


def accuracy(reference: Reference) -> tuple[dict, str]:
    reference.ensure()
    config = reference.config
    rows = {
        "all_new_whale": {
            "kind": "baseline",
            "what": "new_whale + the 4 most frequent ids",
            **_all_new_whale(reference.dir, config),
        }
    }
    print("accuracy: classifier baseline", flush=True)
    classifier = _classifier_baseline(reference)
    rows["softmax_classifier"] = {
        "kind": "baseline",
        "what": (
            f"softmax over known ids, {classifier['backbone']} ({classifier['pretrained']}), whole images resized to "
            f"{classifier['size'][0]}x{classifier['size'][1]}, {classifier['epochs']} epochs"
        ),
        **classifier,
    }
    reference_scores = score_run(reference.dir, config)
    for name, scores in reference_scores["methods"].items():
        rows[name] = {"kind": "ensemble" if name == "ensemble" else "member", "what": "reference", **scores}
    ablations = {}
    for name, (what, override) in _toggle_overrides(config).items():
        print(f"accuracy: ablation {name} ({what})", flush=True)
        workdir = reference.workdir / f"ablation_{name}"
        reused = (workdir / "results").is_dir()  # an earlier (maybe interrupted) run of it, brought up to date
        if not reused:
            seed_workdir(reference.dir, workdir)
        configfiles = reference.configfiles + [write_yaml(reference.workdir / f"ablation_{name}.yaml", override)]
        ablation_config = load_config(configfiles)
        run = run_snakemake(
            workdir,
            configfiles,
            reference.workdir / "logs" / f"ablation_{name}.log",
            *scored_outputs(ablation_config),
            cores=reference.cores,
        )
        scored = score_run(workdir, ablation_config)
        ablations[name] = {"what": what, "override": override, "run": run, "reused_folder": reused, **scored}
        rows[f"ensemble, {name}"] = {"kind": "ablation", "what": what, **scored["methods"]["ensemble"]}
    result = {
        "part": "accuracy",
        "quick": reference.quick,
        "environment": environment(),
        "configfiles": [str(p) for p in reference.configfiles],
        "seed": config["seed"],
        "cv_folds": config["embed"]["cv_folds"],
        "reference_landmark_share": reference_scores["landmark_share"],
        "reference_pseudo_labels_round0": reference_scores["pseudo_labels_round0"],
        "rows": rows,
        "ablations": ablations,
    }
    return result, accuracy_markdown(result)


def accuracy_markdown(result: dict) -> str:
    def get(row, split, key):
        return row.get(split, {}).get(key)

    table = markdown_table(
        [
            "method",
            "setting",
            "val MAP@5",
            "val top-1",
            "val new_whale F1",
            "test MAP@5",
            "test top-1",
            "test new_whale F1",
        ],
        [
            [
                name,
                row["what"],
                get(row, "val", "map5"),
                get(row, "val", "top1"),
                get(row, "val", "new_whale_f1"),
                get(row, "test", "map5"),
                get(row, "test", "top1"),
                get(row, "test", "new_whale_f1"),
            ]
            for name, row in result["rows"].items()
        ],
        right_from=2,
    )
    any_row = next(iter(result["rows"].values()))
    notes = [
        f"Validation: fold(s) {result['cv_folds']} ({get(any_row, 'val', 'n')} images), the same for every row; "
        f"test: {get(any_row, 'test', 'n')} images against the demo's test identities. Seed {result['seed']}.",
        f"Landmark-aligned share of the images: reference {result['reference_landmark_share']}, no_alignment "
        f"{result['ablations'].get('no_alignment', {}).get('landmark_share')}.",
        f"Pseudo-labels the reference's round 0 picked: {result['reference_pseudo_labels_round0']}.",
        "Ablation reruns (jobs): "
        + "; ".join(
            f"{n} {sum(a['run']['jobs'].values())} in {a['run']['wall_s']:.0f} s"
            + (" (its folder was already built by an earlier invocation)" if a.get("reused_folder") else "")
            for n, a in result["ablations"].items()
        )
        + ".",
    ]
    return table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"


# -------------------------------------------------------------------------------------- speed


def _stage(job: str) -> str:
    return next((name for name, pattern in STAGES if re.match(pattern, job)), "other")


def _stage_times(results: Path) -> tuple[dict, list[dict]]:
    """Per stage: jobs, summed wall s, CPU s and the largest peak RSS, from the benchmark files."""
    jobs = read_benchmarks(results)
    if not jobs:
        raise RuntimeError(f"no Snakemake benchmark files in {results / 'benchmarks'}")
    stages = {}
    for job in jobs:
        stage = stages.setdefault(_stage(job["job"]), {"jobs": 0, "wall_s_sum": 0.0, "max_rss_mb": 0.0, "cpu_s": 0.0})
        stage["jobs"] += 1
        stage["wall_s_sum"] = round(stage["wall_s_sum"] + (job["wall_s"] or 0), 2)
        stage["cpu_s"] = round(stage["cpu_s"] + (job["cpu_s"] or 0), 2)
        stage["max_rss_mb"] = max(stage["max_rss_mb"], job["max_rss_mb"] or 0)
    return stages, jobs


def readme_run(reference: Reference) -> dict | None:
    """README's command (`snakemake --cores 8 results/submission.csv` by default) from an empty
    folder, once, in <workdir>/readme_cores<N>: what a new user waits for, measured beside the
    reference's --cores. None when --readme-cores is 0 or equals the reference's cores."""
    cores = reference.readme_cores
    if not cores or cores == reference.cores:
        return None
    folder = reference.workdir / f"readme_cores{cores}"
    folder.mkdir(parents=True, exist_ok=True)
    log = reference.workdir / "logs" / f"readme_cores{cores}.log"
    run = run_snakemake(folder, reference.configfiles, log, "results/submission.csv", cores=cores)
    dag = first_snakemake_wall(folder) or {"wall_s": run["wall_s"], "log": run["log"], "start": "this run"}
    stages, _ = _stage_times(folder / "results")
    return {"cores": cores, "dag_wall_s": dag["wall_s"], "dag_start": dag["start"], "run": run, "stages": stages}


def speed(reference: Reference) -> tuple[dict, str]:
    run = reference.ensure()
    stages, jobs = _stage_times(reference.dir / "results")
    data = reference.dir / "results" / "data"
    images = len(pd.read_parquet(data / "train.parquet")) + len(pd.read_parquet(data / "test.parquet"))
    throughput = []
    for job in jobs:
        name = job["job"]
        kind = (
            "detection (detect_predict)"
            if name == "detect_predict"
            else f"alignment crops ({name})"
            if re.match(r"^align_\d+x\d+$", name)
            else f"embedding inference, plain + mirrored ({name})"
            if name.startswith("embed_")
            else None
        )
        if kind and job["wall_s"]:
            throughput.append(
                {
                    "step": kind,
                    "images": images,
                    "wall_s": job["wall_s"],
                    "images_per_s": round(images / job["wall_s"], 1),
                }
            )
    # The first Snakemake run in the folder built the whole DAG (this process, or the run it was
    # seeded from); later ones only add jobs that new rules or changed settings need.
    dag = first_snakemake_wall(reference.dir) or {"wall_s": run["wall_s"], "log": run["log"], "start": "this run"}
    result = {
        "part": "speed",
        "quick": reference.quick,
        "environment": environment(),
        "cores": reference.cores,
        "dag_wall_s": dag["wall_s"],
        "dag_wall_from": f"Snakemake log of the first run ({dag['log']})",
        "dag_start": dag["start"],
        "bench_reference_run": run,
        "stages": stages,
        "jobs": jobs,
        "throughput": throughput,
        "readme": readme_run(reference),
    }
    return result, speed_markdown(result)


def speed_markdown(result: dict) -> str:
    readme = result.get("readme")
    header = ["stage", "jobs", f"wall s (sum of jobs), --cores {result['cores']}", "CPU s"]
    if readme:
        header += [f"wall s (sum), --cores {readme['cores']}", "CPU s"]
    header.append("peak RSS MB (largest job)")
    rows = []
    for name, s in result["stages"].items():
        row = [name, s["jobs"], s["wall_s_sum"], s["cpu_s"]]
        if readme:
            other = readme["stages"].get(name, {})
            row += [other.get("wall_s_sum", "-"), other.get("cpu_s", "-")]
        rows.append(row + [s["max_rss_mb"]])
    stages = markdown_table(header, rows)
    rates = markdown_table(
        ["step", "images", "wall s", "images/s"],
        [[r["step"], r["images"], r["wall_s"], r["images_per_s"]] for r in result["throughput"]],
    )
    note = (
        f"Whole DAG: {result['dag_wall_s']:.0f} s wall with `--cores {result['cores']}` (the first run in the "
        f"reference folder, started {result['dag_start']})"
        + (
            f"; README's command (`--cores {readme['cores']}`, from an empty folder, started {readme['dag_start']}): "
            f"{readme['dag_wall_s']:.0f} s wall"
            if readme
            else ""
        )
        + "; jobs of one stage may run side by side, so a stage's summed job time can exceed its share of the wall "
        "time. Per job: Snakemake's `benchmark:` files (wall s, max RSS, CPU s). images/s = all train + test images "
        "/ the job's wall time, start-up (Python, torch import, model load) included."
    )
    return stages + "\n" + rates + "\n" + note + "\n"


# -------------------------------------------------------------------------------- incremental


def incremental(reference: Reference) -> tuple[dict, str]:
    reference.ensure()
    workdir = reference.workdir / "incremental"
    seed_workdir(reference.dir, workdir)
    logs = reference.workdir / "logs"
    no_change = run_snakemake(workdir, reference.configfiles, logs / "incremental_no_change.log", cores=reference.cores)
    templates = reference.config["match"].get("templates", "images")
    edit = {"match": {"templates": "centres" if templates == "images" else "images"}}
    edited_files = reference.configfiles + [write_yaml(reference.workdir / "incremental_edit.yaml", edit)]
    edited = run_snakemake(workdir, edited_files, logs / "incremental_edit.log", cores=reference.cores)
    result = {
        "part": "incremental",
        "quick": reference.quick,
        "environment": environment(),
        "full_run_wall_s": (first_snakemake_wall(reference.dir) or reference.ensure())["wall_s"],
        "runs": {"no change": no_change, f"match.templates {templates} -> {edit['match']['templates']}": edited},
    }
    rows = [
        [name, sum(r["jobs"].values()), ", ".join(f"{k} {v}" for k, v in r["jobs"].items()) or "-", r["wall_s"]]
        for name, r in result["runs"].items()
    ]
    table = markdown_table(["rerun after", "jobs", "rules run", "wall s"], rows, right_from=3)
    note = (
        "Same work folder (a hard-linked copy of the reference run); "
        f"the full run took {result['full_run_wall_s']:.0f} s. "
        "Wall time of the whole `snakemake` command, DAG building included."
    )
    return result, table + "\n" + note + "\n"


# ------------------------------------------------------------------------------------- search


def search(out: Path, quick: bool, threads: int) -> tuple[dict, str]:
    argv = ["--quick"] if quick else ["--sizes", "100000", "1000000", "--queries", "10000", "--numpy-queries", "2000"]
    argv += ["--threads", str(threads), "--out", str(out / "search.json")]
    result = bench_search.main(argv)
    return result, (out / "search.md").read_text()


# ----------------------------------------------------------------------------------- detector

# U-Net encoders compared at the reference's recipe (epochs, input size, training images): the
# offline ImageNet initialisation against the same encoder from scratch and the tiny LCNet.
DETECTOR_VARIANTS = {
    "mobilenetv2_imagenet": ("tu-mobilenetv2_100", "imagenet"),
    "mobilenetv2_scratch": ("tu-mobilenetv2_100", None),
    "lcnet_scratch": ("tu-lcnet_100", None),
}
DETECT_METRICS = ("mask_iou", "box_iou", "pck@0.05", "pck@0.1", "n_holdout")


def detector(reference: Reference) -> tuple[dict, str]:
    """Held-out mask IoU, box IoU and PCK of the learned detector per encoder initialisation, with
    its training time: each variant a copy of the reference folder with its encoder override,
    built up to results/detect/metrics.json (a variant equal to the reference reruns nothing).
    Then, on the demo, the annotation budget (bench_detect.compare_annotations): every annotation
    of up to max_train_images photos against 100 photos exported the way the annotate page does."""
    if not (reference.dir / "results" / "data").is_dir():
        reference.ensure()
    model = reference.config["detect"]["model"]
    rows = {}
    for name, (encoder, weights) in DETECTOR_VARIANTS.items():
        workdir = reference.workdir / f"detector_{name}"
        seed_workdir(reference.dir, workdir)
        override = write_yaml(
            reference.workdir / "configs" / f"detector_{name}.yaml",
            {"detect": {"model": {"encoder": encoder, "encoder_weights": weights}}},
        )
        run = run_snakemake(
            workdir,
            reference.configfiles + [override],
            reference.workdir / "logs" / f"detector_{name}.log",
            "results/detect/metrics.json",
            cores=reference.cores,
        )
        metrics = json.loads((workdir / "results" / "detect" / "metrics.json").read_text())
        jobs = {b["job"]: b for b in read_benchmarks(workdir / "results")}
        rows[name] = {
            "encoder": encoder,
            "encoder_weights": weights,
            "run": run,
            **{k: metrics[k] for k in DETECT_METRICS},
            "train_wall_s": jobs.get("detect_train", {}).get("wall_s"),
            "train_cpu_s": jobs.get("detect_train", {}).get("cpu_s"),
            "predict_wall_s": jobs.get("detect_predict", {}).get("wall_s"),
        }
    result = {
        "part": "detector",
        "quick": reference.quick,
        "environment": environment(),
        "rows": rows,
        "recipe": {k: model.get(k) for k in ("input_size", "epochs", "max_train_images", "holdout_fraction")},
    }
    table = markdown_table(
        [
            "encoder",
            "weights",
            "mask IoU",
            "box IoU",
            "PCK@0.05",
            "PCK@0.1",
            "train wall s",
            "train CPU s",
            "predict wall s",
        ],
        [
            [
                r["encoder"],
                r["encoder_weights"] or "scratch",
                f"{r['mask_iou']:.3f}",
                f"{r['box_iou']:.3f}",
                f"{r['pck@0.05']:.3f}",
                f"{r['pck@0.1']:.3f}",
                r["train_wall_s"],
                r["train_cpu_s"],
                r["predict_wall_s"],
            ]
            for r in rows.values()
        ],
        right_from=2,
    )
    recipe = result["recipe"]
    note = (
        f"Held-out annotated train images ({next(iter(rows.values()))['n_holdout']}), the reference recipe: "
        f"input {recipe['input_size']}, {recipe['epochs']} epochs, "
        f"at most {recipe['max_train_images']} training images. "
        "PCK@f: share of keypoints within f x the fluke span of the truth."
    )
    markdown = table + "\n" + note + "\n"
    config = reference.config
    if config["data"]["source"] == "demo":
        root = reference.dir / "resources" / "demo" / f"{config['data']['demo']['preset']}-seed{config['seed']}"
        detect = config["detect"]
        result["annotations"] = bench_detect.compare_annotations(
            root / "kaggle",
            {**detect["model"], "keypoints": detect["keypoints"]},
            {**detect["boxes"], "min_area_fraction": detect["min_area_fraction"]},
            int(config["seed"]),
            reference.workdir / "detector_annotations",
            reference.cores,
        )
        markdown += "\nAnnotation budget:\n\n" + bench_detect.annotations_markdown(result["annotations"])
    return result, markdown
