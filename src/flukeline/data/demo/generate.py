"""`generate_demo`, the demo generator's entry point (`flukeline demo`, rule `demo_dataset`): the
synthetic humpback fluke dataset in the Kaggle 2019 layout, with full ground truth.

It renders persistent individuals (own fluke outline and ventral pigmentation, left and right
halves different) in many sightings (scale, rotation, perspective tilt, submersion, spray,
occluders, lighting, blur, noise, JPEG, grayscale, varied frame sizes, rare pathologies), with
Kaggle's long tail of images per identity and ~38% `new_whale` in train, one task per individual
(in spawned worker processes when `workers` > 1).

Written under `out_root`: train.csv, sample_submission.csv, train/*.jpg, test/*.jpg,
annotations/masks/<stem>.png, annotations/keypoints.csv, annotations/boxes.csv; with the
`metadata` / `flanks` knobs also encounter, date, site and side columns in train.csv and a test.csv
of the test photos' (data/demo/field_records.py).
Written at `truth_path` (outside out_root; only the evaluation may read it): the test identities,
plus `<truth stem>_attributes.csv` beside it with per-image rendering attributes.

Determinism: the dataset's structure (counts, long tail) depends on the preset only; every random
choice comes from `seed` through per-individual and per-image numpy SeedSequences, so the files
are byte-identical for any number of workers.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import pandas as pd

from flukeline.core.io import write_bytes_atomic
from flukeline.core.runtime import parallel_map
from flukeline.data.demo.camera import render_image
from flukeline.data.demo.field_records import field_records, flank_stream, with_flanks
from flukeline.data.demo.individual import KEYPOINT_NAMES, Individual, Population, make_individual, make_population
from flukeline.data.demo.plan import (
    _COMPANION_SPAN_PX,
    _NAME_PATTERN,
    _STREAM_IMAGE,
    _STREAM_INDIVIDUAL,
    _STREAM_POPULATION,
    PlannedImage,
    plan_dataset,
    stream_rng,
)
from flukeline.data.demo.presets import resolve_config

_population_cache: dict[tuple, Population] = {}


def _population(seed: int) -> Population:
    if seed not in _population_cache:
        _population_cache[seed] = make_population(stream_rng(seed, _STREAM_POPULATION))
    return _population_cache[seed]


def build_individual(cfg: dict, seed: int, individual: int) -> Individual:
    """The canonical individual `individual` of the dataset drawn with `seed` (tests, diagnostics)."""
    return make_individual(
        stream_rng(seed, _STREAM_INDIVIDUAL, individual),
        int(cfg["canonical_span_px"]),
        _population(seed),
        float(cfg["identity_similarity"]),
    )


def _flank_individual(cfg: dict, seed: int, individual: int) -> Individual:
    """The individual's right side, marked differently from its left (the `flanks` knob)."""
    return make_individual(
        stream_rng(seed, *flank_stream(individual)),
        int(cfg["canonical_span_px"]),
        _population(seed),
        float(cfg["identity_similarity"]),
    )


def _render_task(task):
    cfg, seed, out_root, individual, images = task
    ind = build_individual(cfg, seed, individual)
    right = _flank_individual(cfg, seed, individual) if any(i.viewpoint == "right" for i in images) else None

    def make_companion(rng):
        return make_individual(rng, _COMPANION_SPAN_PX, _population(seed), float(cfg["identity_similarity"]))

    rows = []
    for image in images:
        rendered = render_image(
            stream_rng(seed, _STREAM_IMAGE, image.index),
            right if image.viewpoint == "right" else ind,
            cfg,
            image.grayscale,
            image.two_flukes,
            image.extreme_ratio,
            make_companion,
        )
        # Images are written in place (tables are atomic): Snakemake discards a failed job's folder.
        (Path(out_root) / image.split / image.name).write_bytes(rendered.jpeg)
        (Path(out_root) / "annotations" / "masks" / f"{image.name[:-4]}.png").write_bytes(rendered.mask_png)
        rows.append((image, rendered.keypoints, rendered.visible, rendered.box, rendered.attributes))
    return rows


def _worker_init():
    cv2.setNumThreads(1)


def _write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, df.to_csv(index=False, lineterminator="\n").encode())


def attributes_path(truth_path) -> Path:
    truth_path = Path(truth_path)
    return truth_path.with_name(f"{truth_path.stem}_attributes.csv")


def generate_demo(out_root, truth_path, preset="demo", seed=0, workers=1, overrides=None) -> dict:
    """Render the synthetic dataset under `out_root` and the test identities at `truth_path`.

    `overrides` maps knob -> value over the preset (unknown knob: ValueError naming it).
    Returns a summary: counts, new_whale share, identities, images-per-identity histogram,
    pathologies, seconds and images/s."""
    started = time.perf_counter()
    cfg = resolve_config(preset, overrides)
    out_root, truth_path = Path(out_root).resolve(), Path(truth_path).resolve()
    if truth_path.is_relative_to(out_root):
        raise ValueError(f"truth_path {truth_path} must lie outside out_root {out_root}")
    plan = plan_dataset(cfg, int(seed))
    if cfg["flanks"]:
        plan = with_flanks(plan, int(seed))
    for sub in ("train", "test", "annotations/masks"):
        (out_root / sub).mkdir(parents=True, exist_ok=True)
    truth_path.parent.mkdir(parents=True, exist_ok=True)

    by_individual: dict[int, list[PlannedImage]] = {}
    for image in plan:
        by_individual.setdefault(image.individual, []).append(image)
    results = _render_individuals(cfg, int(seed), out_root, by_individual, workers)
    _write_tables(out_root, truth_path, cfg, results)
    _write_field_records(out_root, cfg, int(seed), plan, results)
    _remove_stale_files(out_root, {image.name for image in plan})

    seconds = time.perf_counter() - started
    summary = {"preset": preset, "seed": int(seed), "workers": int(workers)}
    summary.update(_plan_counts(plan, len(by_individual), [row[4] for row in results]))
    return summary | {"seconds": round(seconds, 3), "images_per_s": round(len(plan) / seconds, 2)}


def _render_individuals(cfg: dict, seed: int, out_root: Path, by_individual: dict, workers: int) -> list[tuple]:
    """Every image rendered and written, one task per individual; the rows sorted by image name
    (whatever order the workers finished in)."""
    # Biggest tasks first so the last ones to finish are short.
    tasks = [
        (cfg, seed, str(out_root), ind, imgs)
        for ind, imgs in sorted(by_individual.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    results = []
    if workers <= 1:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for task in tasks:
                results += _render_task(task)
        finally:
            cv2.setNumThreads(threads)
    else:
        # spawn: safe even when the caller has threads (torch, Snakemake) running.
        for rows in parallel_map(
            _render_task, tasks, workers, processes=True, chunksize=4, initializer=_worker_init, spawn=True
        ):
            results += rows
    results.sort(key=lambda row: row[0].name)
    return results


def _plan_counts(plan: list[PlannedImage], n_individuals: int, attrs: list[dict]) -> dict:
    """The summary's counts of the planned images and of what the renderer drew (attrs)."""
    train = [img for img in plan if img.split == "train"]
    test = [img for img in plan if img.split == "test"]
    per_identity = Counter(img.label for img in train if img.label != "new_whale")
    return {
        "n_train": len(train),
        "n_test": len(test),
        "n_train_new_whale": sum(img.label == "new_whale" for img in train),
        "new_whale_share": round(sum(img.label == "new_whale" for img in train) / len(train), 4),
        "n_identities": len(per_identity),
        "n_test_known": sum(img.label != "new_whale" for img in test),
        "n_test_new_whale": sum(img.label == "new_whale" for img in test),
        "n_individuals": n_individuals,
        "images_per_identity": dict(sorted(Counter(per_identity.values()).items())),
        "grayscale_share": round(sum(img.grayscale for img in plan) / len(plan), 4),
        "n_two_flukes": sum(img.two_flukes for img in plan),
        "n_extreme_ratio": sum(img.extreme_ratio for img in plan),
        "n_submerged": sum(a["submerged"] for a in attrs),
        "n_occluded": sum(bool(a["occluders"]) for a in attrs),
    }


def _write_tables(out_root: Path, truth_path: Path, cfg: dict, results) -> None:
    train_rows = [(img.name, img.label) for img, *_ in results if img.split == "train"]
    test_names = [img.name for img, *_ in results if img.split == "test"]
    _write_csv_atomic(pd.DataFrame(train_rows, columns=["Image", "Id"]), out_root / "train.csv")
    # Kaggle's sample submission: new_whale then the most frequent identities.
    top = Counter(label for _, label in train_rows if label != "new_whale")
    placeholder = " ".join(["new_whale"] + [w for w, _ in sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))[:4]])
    _write_csv_atomic(pd.DataFrame({"Image": test_names, "Id": placeholder}), out_root / "sample_submission.csv")

    n_keypoints = int(cfg["n_keypoints"])
    kp_rows, box_rows, attr_rows = [], [], []
    for img, keypoints, visible, box, attrs in results:
        for k in range(n_keypoints):
            kp_rows.append(
                (img.name, KEYPOINT_NAMES[k], f"{keypoints[k, 0]:.2f}", f"{keypoints[k, 1]:.2f}", int(visible[k]))
            )
        box_rows.append((img.name, *box))
        attr_rows.append(
            {
                "Image": img.name,
                "split": img.split,
                "individual": img.individual,
                "Id": img.label,
                "n_visible_keypoints": int(visible[:n_keypoints].sum()),
                **attrs,
            }
        )
    _write_csv_atomic(
        pd.DataFrame(kp_rows, columns=["Image", "keypoint", "x", "y", "visible"]),
        out_root / "annotations" / "keypoints.csv",
    )
    _write_csv_atomic(
        pd.DataFrame(box_rows, columns=["Image", "x0", "y0", "x1", "y1"]), out_root / "annotations" / "boxes.csv"
    )
    truth = pd.DataFrame([(img.name, img.label) for img, *_ in results if img.split == "test"], columns=["Image", "Id"])
    _write_csv_atomic(truth, truth_path)
    _write_csv_atomic(pd.DataFrame(attr_rows), attributes_path(truth_path))


def _write_field_records(out_root: Path, cfg: dict, seed: int, plan: list[PlannedImage], results) -> None:
    """With the `metadata` / `flanks` knobs (data/demo/field_records.py): train.csv again with the
    field records' columns, and test.csv with the test photos'. Without them: nothing (and a
    test.csv of an earlier run into the same folder removed)."""
    if not (cfg["metadata"] or cfg["flanks"]):
        (out_root / "test.csv").unlink(missing_ok=True)
        return
    records = field_records(plan, cfg, seed) if cfg["metadata"] else {}
    rows = []
    for image, *_ in results:
        row = {"Image": image.name, "Id": image.label, "split": image.split, **records.get(image.name, {})}
        if cfg["flanks"]:
            row["viewpoint"] = image.viewpoint
        rows.append(row)
    table = pd.DataFrame(rows)
    train = table[table["split"] == "train"].drop(columns="split")
    _write_csv_atomic(train, out_root / "train.csv")
    # The test photos' records (ingest's test.csv); their identities stay in the truth file only.
    _write_csv_atomic(table[table["split"] == "test"].drop(columns=["split", "Id"]), out_root / "test.csv")


def _remove_stale_files(out_root: Path, names: set[str]) -> None:
    """Drop images/masks of an earlier run into the same folder (only files named like ours)."""
    stems = {name[:-4] for name in names}
    for sub, keep in (("train", names), ("test", names), ("annotations/masks", {s + ".png" for s in stems})):
        for path in (out_root / sub).iterdir():
            if _NAME_PATTERN.match(path.name) and path.name not in keep:
                path.unlink()
