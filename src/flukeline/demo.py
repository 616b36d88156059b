"""Synthetic humpback fluke dataset in the Kaggle 2019 layout, with full ground truth.

`generate_demo` renders persistent individuals (own fluke outline and ventral pigmentation, left
and right halves different) in many sightings (scale, rotation, perspective tilt, submersion,
spray, occluders, lighting, blur, noise, JPEG, grayscale, varied frame sizes, rare pathologies),
with Kaggle's long tail of images per identity and ~38% `new_whale` in train.

Written under `out_root`: train.csv, sample_submission.csv, train/*.jpg, test/*.jpg,
annotations/masks/<stem>.png, annotations/keypoints.csv, annotations/boxes.csv.
Written at `truth_path` (outside out_root; only the evaluation may read it): the test identities,
plus `<truth stem>_attributes.csv` beside it with per-image rendering attributes.

Determinism: the dataset's structure (counts, long tail) depends on the preset only; every random
choice comes from `seed` through per-individual and per-image numpy SeedSequences, so the files
are byte-identical for any number of workers.
"""

from __future__ import annotations

import multiprocessing
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.demo_render import (
    KEYPOINT_NAMES,
    Individual,
    Population,
    make_individual,
    make_population,
    render_image,
)
from flukeline.io import write_bytes_atomic

__all__ = ["PRESETS", "KEYPOINT_NAMES", "CANONICAL_KEYPOINTS", "generate_demo", "contact_sheet", "plan_dataset",
           "resolve_config", "build_individual"]

# Knobs shared by all presets. The difficulty knobs are meant to be tuned; each one is live.
_COMMON = {
    # -- identities --------------------------------------------------------------------------
    "new_whale_share": 0.38,  # share of train images labelled new_whale (Kaggle: 38.1%)
    "test_new_share": 0.30,  # share of test images showing individuals absent from train
    "identity_similarity": 0.3,  # 0 = independent animals .. 1 = identical; pulls outlines and
    #                              pigmentation towards a shared population template and fades
    #                              personal marks (nicks, spots, scars, rake marks)
    "appearance_jitter": 0.5,  # per-sighting sheen / uneven light on the blade (0 = none)
    "flex": 0.6,  # non-rigid bending of the blade per sighting (tip curl, half compression)
    # -- framing -------------------------------------------------------------------------------
    "scale_range": (0.3, 0.95),  # fluke span as a fraction of image width (log-uniform)
    "crop_prob": 0.08,  # chance the fluke runs partly out of the frame
    "rotation_deg": 25.0,  # in-plane roll, normal with sd rotation_deg/2, clipped at +-rotation_deg
    "tilt_deg": 35.0,  # out-of-plane yaw up to +-tilt_deg (pitch up to +-0.6 tilt_deg), perspective
    # -- scene ---------------------------------------------------------------------------------
    "submersion_prob": 0.15,  # chance the water line rises over the blade
    "submersion_max": 0.6,  # how far it may rise, as a fraction of notch-to-peduncle height
    "spray_prob": 0.3,  # water cascading off the trailing edge (streaks, mist)
    "occluder_prob": 0.12,  # boat rail/bow, birds, another whale's back, a rope in front
    "text_prob": 0.04,  # catalogue label burnt into the photo
    "horizon_prob": 0.35,  # horizon with sky (and sometimes coastline) visible above the sea
    "clutter": 0.5,  # sea roughness, sun glitter and whitecaps (0 = calm plain sea)
    "two_fluke_prob": 0.02,  # second fluke: another whale behind, or a two-photo collage
    "extreme_ratio_prob": 0.01,  # panorama crops like Kaggle's 2528x382
    # -- camera --------------------------------------------------------------------------------
    "lighting": 0.5,  # spread of exposure, contrast, white balance, haze, backlit flukes
    "blur_prob": 0.35,  # chance of Gaussian or motion blur
    "blur_max": 1.5,  # max blur sigma in pixels at 256 px image width (scales with resolution)
    "noise_max": 10.0,  # max sensor noise sd in 8-bit levels
    "jpeg_quality": (50, 95),  # JPEG quality drawn uniformly per image (inclusive)
    "grayscale_share": 0.30,  # exact share of grayscale (single-channel) images (Kaggle ~30%)
    # -- annotations ---------------------------------------------------------------------------
    "n_keypoints": 6,  # first n of KEYPOINT_NAMES written to annotations/keypoints.csv
}

PRESETS: dict[str, dict] = {
    # Tests and the lead's end-to-end DAG (<= 5 min on 2 cores).
    "tiny": {
        **_COMMON,
        "n_train": 200,  # train images
        "n_test": 64,  # test images
        "max_images_per_id": 16,  # cap of the long tail (Kaggle's largest identity has 73)
        "image_width": 160,  # pixels that Kaggle's typical 1050-px width maps to
        "canonical_span_px": 160,  # resolution of each individual's canonical texture (px per span)
    },
    # Default: big enough that MAP@5 differences between methods mean something.
    "demo": {
        **_COMMON,
        "n_train": 1500,
        "n_test": 450,
        "max_images_per_id": 40,
        "image_width": 256,
        "canonical_span_px": 256,
    },
    # Benchmarks.
    "large": {
        **_COMMON,
        "n_train": 6000,
        "n_test": 2000,
        "max_images_per_id": 73,
        "image_width": 512,
        "canonical_span_px": 512,
    },
}

# Mean keypoint positions of the population in the canonical frame (span units: tips at x=+-0.5,
# notch level y=0, y down), in KEYPOINT_NAMES order: a target for landmark alignment.
CANONICAL_KEYPOINTS = np.array(
    [
        [-0.5, -0.06],
        [0.0, 0.04],
        [0.5, -0.06],
        [-0.25, -0.035],
        [0.25, -0.035],
        [0.0, 0.33],
        [-0.33, 0.16],
        [0.33, 0.16],
    ]
)

# Kaggle 2019 train: identities by number of images (1..17), and the 18+ group.
KAGGLE_IDS_BY_COUNT = {1: 2073, 2: 1285, 3: 568, 4: 273, 5: 172, 6: 136, 7: 86, 8: 76, 9: 62, 10: 46,
                       11: 39, 12: 26, 13: 14, 14: 16, 15: 19, 16: 16, 17: 17}
KAGGLE_TAIL_IDS, KAGGLE_TAIL_IMAGES, KAGGLE_MAX_IMAGES = 81, 2377, 73
KAGGLE_LABELLED_IMAGES, KAGGLE_IDS = 15697, 5004

# Independent random streams: spawn_key[0] says which, spawn_key[1] which item.
_STREAM_POPULATION, _STREAM_INDIVIDUAL, _STREAM_IMAGE, _STREAM_STRUCTURE = 0, 1, 2, 3
_COMPANION_SPAN_PX = 96
_NAME_PATTERN = re.compile(r"^[0-9a-f]{9}\.(jpg|png)$")


def _rng(seed: int, stream: int, item: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, item)))


def resolve_config(preset: str = "demo", overrides: dict | None = None) -> dict:
    """The preset's knobs with `overrides` merged over them (ValueError on an unknown knob)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = dict(PRESETS[preset])
    for knob, value in (overrides or {}).items():
        if knob not in cfg:
            raise ValueError(f"unknown demo knob {knob!r} (known knobs: {', '.join(sorted(cfg))})")
        if isinstance(cfg[knob], tuple):
            value = tuple(value)
            if len(value) != len(cfg[knob]) or value[0] > value[1]:
                raise ValueError(f"demo knob {knob!r} must be a (low, high) pair, got {value!r}")
        cfg[knob] = value
    for knob in ("new_whale_share", "test_new_share", "identity_similarity", "grayscale_share", "two_fluke_prob",
                 "extreme_ratio_prob", "submersion_prob", "spray_prob", "occluder_prob", "text_prob", "crop_prob",
                 "horizon_prob", "blur_prob"):
        if not 0.0 <= float(cfg[knob]) <= 1.0:
            raise ValueError(f"demo knob {knob!r} must lie in [0, 1], got {cfg[knob]!r}")
    if not 1 <= int(cfg["n_keypoints"]) <= len(KEYPOINT_NAMES):
        raise ValueError(f"demo knob 'n_keypoints' must lie in 1..{len(KEYPOINT_NAMES)}, got {cfg['n_keypoints']!r}")
    if int(cfg["n_train"]) < 2 or int(cfg["n_test"]) < 1:
        raise ValueError("demo knobs 'n_train' >= 2 and 'n_test' >= 1 are required")
    return cfg


# --------------------------------------------------------------------------------------------
# Dataset plan: who appears where (depends on the preset's sizes; identities drawn from seed)
# --------------------------------------------------------------------------------------------


def _kaggle_identity_sizes() -> np.ndarray:
    """Images per identity of all 5,004 Kaggle identities, largest first (18+ group spread
    smoothly from 73 down to 18 with Kaggle's total)."""
    x = np.linspace(1.0, 0.0, KAGGLE_TAIL_IDS)
    lo, hi = 0.1, 20.0
    for _ in range(60):  # exponent whose tail sums to Kaggle's 2,377 images
        p = (lo + hi) / 2
        total = np.round(18 + (KAGGLE_MAX_IMAGES - 18) * x**p).sum()
        lo, hi = (p, hi) if total > KAGGLE_TAIL_IMAGES else (lo, p)
    tail = np.round(18 + (KAGGLE_MAX_IMAGES - 18) * x**p).astype(int)
    body = [k for k, n in sorted(KAGGLE_IDS_BY_COUNT.items(), reverse=True) for _ in range(n)]
    return np.concatenate([tail, body])


def identity_sizes(n_labelled: int, max_images_per_id: int) -> np.ndarray:
    """Train images per labelled identity for `n_labelled` images: Kaggle's distribution sampled
    at evenly spaced quantiles (deterministic), capped, then trimmed to the exact total."""
    kaggle = _kaggle_identity_sizes()
    n_ids = max(1, round(n_labelled * KAGGLE_IDS / KAGGLE_LABELLED_IMAGES))
    picks = ((np.arange(n_ids) + 0.5) * len(kaggle) / n_ids).astype(int)
    sizes = np.minimum(kaggle[picks], max_images_per_id)
    # Match the total by adjusting the largest identities (the tail is the least constrained).
    i = 0
    while sizes.sum() > n_labelled:
        j = i % max(1, int((sizes > 1).sum()))
        sizes[j] -= 1
        i += 1
    i = 0
    while sizes.sum() < n_labelled:
        growable = np.flatnonzero(sizes < max_images_per_id)
        if len(growable) == 0:
            sizes = np.append(sizes, 1)
            continue
        sizes[growable[i % min(len(growable), max(1, n_ids // 10))]] += 1
        i += 1
    return np.sort(sizes)[::-1]


@dataclass(frozen=True)
class PlannedImage:
    index: int  # seeds this image's random stream
    name: str
    split: str  # "train" or "test"
    individual: int
    label: str  # w_xxxxxxx, or new_whale for individuals unknown to train
    grayscale: bool
    two_flukes: bool
    extreme_ratio: bool


def unique_hex(rng, n, digits, taken=()):
    """n distinct random lowercase hex strings of `digits` digits (Kaggle-style names)."""
    seen, out = set(taken), []
    while len(out) < n:
        for value in rng.integers(0, 16**digits, size=n - len(out)):
            text = f"{int(value):0{digits}x}"
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def plan_dataset(cfg: dict, seed: int) -> list[PlannedImage]:
    """Every image to render: split, individual, label and the exact-share pathologies."""
    rng = _rng(seed, _STREAM_STRUCTURE)
    n_train, n_test = int(cfg["n_train"]), int(cfg["n_test"])
    n_train_new = round(n_train * cfg["new_whale_share"])
    sizes = identity_sizes(n_train - n_train_new, int(cfg["max_images_per_id"]))
    n_known = len(sizes)
    n_test_new = round(n_test * cfg["test_new_share"])
    n_test_known = n_test - n_test_new
    ids = ["w_" + h for h in unique_hex(rng, n_known, 7)]

    slots = []  # (split, individual, label)
    for individual, size in enumerate(sizes):
        slots += [("train", individual, ids[individual])] * int(size)
    slots += [("train", n_known + k, "new_whale") for k in range(n_train_new)]
    # Known animals come back in test roughly in proportion to how often train saw them.
    for individual in np.sort(rng.choice(n_known, size=n_test_known, p=sizes / sizes.sum())):
        slots.append(("test", int(individual), ids[individual]))
    first_test_new = n_known + n_train_new
    slots += [("test", first_test_new + k, "new_whale") for k in range(n_test_new)]

    n = len(slots)
    names = unique_hex(rng, n, 9)

    def exact_share(share):
        flags = np.zeros(n, bool)
        flags[rng.permutation(n)[: round(share * n)]] = True
        return flags

    gray, two, extreme = (exact_share(cfg[k]) for k in ("grayscale_share", "two_fluke_prob", "extreme_ratio_prob"))
    extreme &= ~two  # one pathology per image keeps each one readable
    return [
        PlannedImage(i, names[i] + ".jpg", split, individual, label, bool(gray[i]), bool(two[i]), bool(extreme[i]))
        for i, (split, individual, label) in enumerate(slots)
    ]


# --------------------------------------------------------------------------------------------
# Rendering (runs in worker processes; one task = one individual and all its sightings)
# --------------------------------------------------------------------------------------------

_population_cache: dict[tuple, Population] = {}


def _population(seed: int) -> Population:
    if seed not in _population_cache:
        _population_cache[seed] = make_population(_rng(seed, _STREAM_POPULATION))
    return _population_cache[seed]


def build_individual(cfg: dict, seed: int, individual: int) -> Individual:
    """The canonical individual `individual` of the dataset drawn with `seed` (tests, diagnostics)."""
    return make_individual(_rng(seed, _STREAM_INDIVIDUAL, individual), int(cfg["canonical_span_px"]),
                           _population(seed), float(cfg["identity_similarity"]))


def _render_task(task):
    cfg, seed, out_root, individual, images = task
    ind = build_individual(cfg, seed, individual)

    def make_companion(rng):
        return make_individual(rng, _COMPANION_SPAN_PX, _population(seed), float(cfg["identity_similarity"]))

    rows = []
    for image in images:
        rendered = render_image(_rng(seed, _STREAM_IMAGE, image.index), ind, cfg, image.grayscale,
                                image.two_flukes, image.extreme_ratio, make_companion)
        # Images are written in place (tables are atomic): Snakemake discards a failed job's folder.
        (Path(out_root) / image.split / image.name).write_bytes(rendered.jpeg)
        (Path(out_root) / "annotations" / "masks" / f"{image.name[:-4]}.png").write_bytes(rendered.mask_png)
        rows.append((image, rendered.keypoints, rendered.visible, rendered.box, rendered.attributes))
    return rows


def _worker_init():
    cv2.setNumThreads(1)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
    for sub in ("train", "test", "annotations/masks"):
        (out_root / sub).mkdir(parents=True, exist_ok=True)
    truth_path.parent.mkdir(parents=True, exist_ok=True)

    by_individual: dict[int, list[PlannedImage]] = {}
    for image in plan:
        by_individual.setdefault(image.individual, []).append(image)
    # Biggest tasks first so the last ones to finish are short.
    tasks = [(cfg, int(seed), str(out_root), ind, imgs)
             for ind, imgs in sorted(by_individual.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
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
        with multiprocessing.get_context("spawn").Pool(int(workers), initializer=_worker_init) as pool:
            for rows in pool.imap_unordered(_render_task, tasks, chunksize=4):
                results += rows
    results.sort(key=lambda row: row[0].name)

    _write_tables(out_root, truth_path, cfg, results)
    _remove_stale_files(out_root, {image.name for image in plan})

    seconds = time.perf_counter() - started
    train = [img for img in plan if img.split == "train"]
    test = [img for img in plan if img.split == "test"]
    per_identity = Counter(img.label for img in train if img.label != "new_whale")
    attrs = [row[4] for row in results]
    return {
        "preset": preset,
        "seed": int(seed),
        "workers": int(workers),
        "n_train": len(train),
        "n_test": len(test),
        "n_train_new_whale": sum(img.label == "new_whale" for img in train),
        "new_whale_share": round(sum(img.label == "new_whale" for img in train) / len(train), 4),
        "n_identities": len(per_identity),
        "n_test_known": sum(img.label != "new_whale" for img in test),
        "n_test_new_whale": sum(img.label == "new_whale" for img in test),
        "n_individuals": len(by_individual),
        "images_per_identity": dict(sorted(Counter(per_identity.values()).items())),
        "grayscale_share": round(sum(img.grayscale for img in plan) / len(plan), 4),
        "n_two_flukes": sum(img.two_flukes for img in plan),
        "n_extreme_ratio": sum(img.extreme_ratio for img in plan),
        "n_submerged": sum(a["submerged"] for a in attrs),
        "n_occluded": sum(bool(a["occluders"]) for a in attrs),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(plan) / seconds, 2),
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
            kp_rows.append((img.name, KEYPOINT_NAMES[k], f"{keypoints[k, 0]:.2f}", f"{keypoints[k, 1]:.2f}", int(visible[k])))
        box_rows.append((img.name, *box))
        attr_rows.append({"Image": img.name, "split": img.split, "individual": img.individual, "Id": img.label,
                          "n_visible_keypoints": int(visible[:n_keypoints].sum()), **attrs})
    _write_csv_atomic(pd.DataFrame(kp_rows, columns=["Image", "keypoint", "x", "y", "visible"]),
                      out_root / "annotations" / "keypoints.csv")
    _write_csv_atomic(pd.DataFrame(box_rows, columns=["Image", "x0", "y0", "x1", "y1"]),
                      out_root / "annotations" / "boxes.csv")
    truth = pd.DataFrame([(img.name, img.label) for img, *_ in results if img.split == "test"], columns=["Image", "Id"])
    _write_csv_atomic(truth, truth_path)
    _write_csv_atomic(pd.DataFrame(attr_rows), attributes_path(truth_path))


def _remove_stale_files(out_root: Path, names: set[str]) -> None:
    """Drop images/masks of an earlier run into the same folder (only files named like ours)."""
    stems = {name[:-4] for name in names}
    for sub, keep in (("train", names), ("test", names), ("annotations/masks", {s + ".png" for s in stems})):
        for path in (out_root / sub).iterdir():
            if _NAME_PATTERN.match(path.name) and path.name not in keep:
                path.unlink()


def contact_sheet(out_root, out_png, n_identities=8, n_sightings=6) -> None:
    """PNG grid: one row per identity with the most train images, its sightings in columns."""
    out_root = Path(out_root)
    train = pd.read_csv(out_root / "train.csv")
    known = train[train["Id"] != "new_whale"]
    counts = known["Id"].value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_identities]
    cell_w, cell_h, label_w, pad = 220, 150, 130, 4
    sheet = np.full((len(order) * (cell_h + pad) + pad, label_w + n_sightings * (cell_w + pad) + pad, 3), 255, np.uint8)
    for row, (identity, count) in enumerate(order):
        top = pad + row * (cell_h + pad)
        cv2.putText(sheet, identity, (6, top + cell_h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(sheet, f"{count} images", (6, top + cell_h // 2 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (90, 90, 90), 1, cv2.LINE_AA)
        names = sorted(known.loc[known["Id"] == identity, "Image"])[:n_sightings]
        for col, name in enumerate(names):
            image = cv2.imread(str(out_root / "train" / name), cv2.IMREAD_COLOR)
            if image is None:
                continue
            scale = min(cell_w / image.shape[1], cell_h / image.shape[0])
            w, h = max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))
            thumb = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            left = label_w + pad + col * (cell_w + pad) + (cell_w - w) // 2
            y = top + (cell_h - h) // 2
            sheet[y:y + h, left:left + w] = thumb
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the contact sheet")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_png, png.tobytes())
