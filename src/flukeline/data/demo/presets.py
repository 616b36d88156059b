"""The demo generator's knobs: `PRESETS` (tiny, demo, large, kaggle: image counts, long-tail cap,
resolution) over the knobs they share (identities, framing, scene, camera, annotations; each one
documented where defined), merged with `data.demo.overrides` and checked by `resolve_config`.

Also the population's mean keypoint positions in the canonical frame (`CANONICAL_KEYPOINTS`, a
target for landmark alignment) and Kaggle 2019's images-per-identity distribution, which
`identity_sizes` samples deterministically for a preset's train set.
"""

from __future__ import annotations

import numpy as np

from flukeline.data.demo.individual import KEYPOINT_NAMES

# Knobs shared by all presets. The difficulty knobs are meant to be tuned; each one is live.
_COMMON = {
    # -- identities --------------------------------------------------------------------------
    "new_whale_share": 0.38,  # share of train images labelled new_whale (Kaggle: 38.1%)
    "test_new_share": 0.30,  # share of test images showing individuals absent from train
    "new_test_photos": 1,  # test photos per individual absent from train (1: each a different animal)
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
    # -- field records (data/demo/field_records.py; off: the files are those of before) --------
    "metadata": False,  # encounter, date, location, latitude, longitude columns in train.csv and test.csv
    "sites": 6,  # study sites, ~55 km apart
    "home_site_prob": 0.8,  # chance an encounter is at the individual's home site
    "flanks": False,  # each photo a left or right side (viewpoint column), the two sides marked differently
    # -- size and speed ----------------------------------------------------------------------
    "photos": None,  # total train + test photos; None: the preset's n_train + n_test. Both scale
    #                  at the preset's ratio, so one preset makes a 2k, an 8k and the full catalogue
    "render_scale": 1.0,  # scenes drawn at this share of the width, then resized up to it: the
    #                       kaggle preset draws at 1/3 (33k scenes at 1050 px would take ~2 h on
    #                       2 cores; decoding, detection and hashing still see 1050-px photos)
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
    # Scale benchmarks (bench/bench_scale.py): Kaggle 2019's size and photo width (25,361 train,
    # 7,960 test, 1050 px; the identities' long tail up to 73 images). Scenes are drawn at 350 px
    # and resized to 1050 (render_scale): pixel counts, file sizes and decode times are a 1050-px
    # catalogue's, the fine marks a 350-px photo's. `photos` makes smaller catalogues of the same
    # make-up (e.g. overrides {photos: 2000}).
    "kaggle": {
        **_COMMON,
        "test_new_share": 0.35,  # the brief: 30-40% of test photos show animals train never saw
        "n_train": 25361,
        "n_test": 7960,
        "max_images_per_id": 73,
        "image_width": 1050,
        "canonical_span_px": 384,
        "render_scale": 1 / 3,
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
KAGGLE_IDS_BY_COUNT = {
    1: 2073,
    2: 1285,
    3: 568,
    4: 273,
    5: 172,
    6: 136,
    7: 86,
    8: 76,
    9: 62,
    10: 46,
    11: 39,
    12: 26,
    13: 14,
    14: 16,
    15: 19,
    16: 16,
    17: 17,
}

KAGGLE_TAIL_IDS, KAGGLE_TAIL_IMAGES, KAGGLE_MAX_IMAGES = 81, 2377, 73

KAGGLE_LABELLED_IMAGES, KAGGLE_IDS = 15697, 5004


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
    _apply_photos(cfg)
    for knob in (
        "new_whale_share",
        "test_new_share",
        "identity_similarity",
        "grayscale_share",
        "two_fluke_prob",
        "extreme_ratio_prob",
        "submersion_prob",
        "spray_prob",
        "occluder_prob",
        "text_prob",
        "crop_prob",
        "horizon_prob",
        "blur_prob",
        "home_site_prob",
    ):
        if not 0.0 <= float(cfg[knob]) <= 1.0:
            raise ValueError(f"demo knob {knob!r} must lie in [0, 1], got {cfg[knob]!r}")
    if not 1 <= int(cfg["n_keypoints"]) <= len(KEYPOINT_NAMES):
        raise ValueError(f"demo knob 'n_keypoints' must lie in 1..{len(KEYPOINT_NAMES)}, got {cfg['n_keypoints']!r}")
    if int(cfg["new_test_photos"]) < 1:
        raise ValueError(f"demo knob 'new_test_photos' must be >= 1, got {cfg['new_test_photos']!r}")
    if int(cfg["sites"]) < 1:
        raise ValueError(f"demo knob 'sites' must be >= 1, got {cfg['sites']!r}")
    if not 0.0 < float(cfg["render_scale"]) <= 1.0:
        raise ValueError(f"demo knob 'render_scale' must lie in (0, 1], got {cfg['render_scale']!r}")
    if int(cfg["n_train"]) < 2 or int(cfg["n_test"]) < 1:
        raise ValueError("demo knobs 'n_train' >= 2 and 'n_test' >= 1 are required")
    return cfg


def _apply_photos(cfg: dict) -> None:
    """n_train and n_test for `photos` in all (at the preset's train:test ratio), in place."""
    if cfg.get("photos") is None:
        return
    photos = int(cfg["photos"])
    if photos < 3:
        raise ValueError(f"demo knob 'photos' must be at least 3, got {cfg['photos']!r}")
    share = int(cfg["n_train"]) / (int(cfg["n_train"]) + int(cfg["n_test"]))
    cfg["n_train"] = max(2, min(photos - 1, round(photos * share)))
    cfg["n_test"] = photos - cfg["n_train"]


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
