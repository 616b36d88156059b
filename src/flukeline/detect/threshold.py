"""Classical detection (`detect.method: threshold` or `none`, the `detect` rule): one box per
image from a background-difference threshold; also the learned detector's last fallback before
the whole image.

What it assumes: a dark fluke against water and sky. Sea and sky change mostly with height, so
each row's median colour is a fair background model; the fluke is the largest blob that differs
from it (Otsu threshold, as seed 000 thresholded), found on a copy at most 256 px on a side. On
other photos (a whole animal on land, a face, a fin against a busy shore) the largest differing
blob is often a head, a rock or a patch of ground: the log gives the share of boxes under 5% of
their photo's area and warns when more than half are, suggesting `none` or annotations for the
learned detector. `none` boxes the whole image (align then letterboxes the whole photo, aspect
kept), the right start without annotations for anything but flukes on water.

`run` writes results/detect/boxes.parquet (image, split, x0, y0, x1, y1, method, score) and the
learned detector's keypoints and masks tables, empty, so that align reads one schema and uses the
boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import cv2
import numpy as np
import pandas as pd

from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_parquet_atomic
from flukeline.core.photo_cache import PACK_ENTRIES, PhotoCache
from flukeline.core.runtime import parallel_map
from flukeline.detect.boxes import Box
from flukeline.detect.settings import ClassicalDetectSettings

log = logging.getLogger(__name__)

# Bump when threshold_box's result for the same photo changes (the per-photo cache's key).
THRESHOLD_VERSION = 1

# Detection runs on a downscaled copy: the box needs no more resolution than this.
WORK_SIDE = 256

# A box under this share of its photo's area is more likely a detail (a head, a rock) than a
# fluke photographed to be identified; the log warns when more than half of the boxes are.
SMALL_BOX_SHARE = 0.05


def threshold_box(rgb: np.ndarray, min_area_fraction: float = ClassicalDetectSettings.min_area_fraction) -> Box:
    """Box (x0, y0 inclusive; x1, y1 exclusive, original pixels) of the largest foreground blob,
    or the whole image when no blob covers min_area_fraction of it."""
    height, width = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    background = np.median(lab, axis=1, keepdims=True)
    difference = np.linalg.norm(lab - background, axis=2)
    difference = cv2.GaussianBlur(difference, (5, 5), 0)
    scaled = cv2.normalize(difference, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, foreground = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernel)
    count, _, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    whole = Box(0, 0, width, height, "whole_image", 0.0)
    if count <= 1:
        return whole
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    area_share = float(areas[best - 1]) / foreground.size
    if area_share < min_area_fraction:
        return whole
    x, y, w, h = (int(v) for v in stats[best, :4])
    return Box(
        x0=max(0, int(np.floor(x / scale))),
        y0=max(0, int(np.floor(y / scale))),
        x1=min(width, int(np.ceil((x + w) / scale))),
        y1=min(height, int(np.ceil((y + h) / scale))),
        method="threshold",
        score=area_share,
    )


def _detect_one(task):
    """(Box, photo area in pixels) of one photo: one worker process's task."""
    path, method, min_area_fraction = task
    cv2.setNumThreads(1)
    rgb = read_image_rgb(path)
    area = rgb.shape[0] * rgb.shape[1]
    if method == "none":
        # No detection: the whole photo, as a plain classifier on resized images would see it.
        box = Box(0, 0, rgb.shape[1], rgb.shape[0], "whole_image", 0.0)
    else:
        box = threshold_box(rgb, min_area_fraction)
    return box, area


def _log_small_boxes(table: pd.DataFrame, photo_areas) -> None:
    """The share of threshold boxes under SMALL_BOX_SHARE of their photo; a warning when most are."""
    found = (table["method"] == "threshold").to_numpy()
    if not found.any():
        return
    box_areas = ((table["x1"] - table["x0"]) * (table["y1"] - table["y0"])).to_numpy(np.float64)
    small = found & (box_areas < SMALL_BOX_SHARE * np.asarray(photo_areas, np.float64))
    share = small.sum() / len(table)
    log.info(
        "%d of %d boxes (%.0f%%) cover under %.0f%% of their photo",
        small.sum(),
        len(table),
        100 * share,
        100 * SMALL_BOX_SHARE,
    )
    if share > 0.5:
        log.warning(
            "most threshold boxes are small: the threshold detector looks for a dark fluke against water and"
            " on other photos often boxes a head, a rock or ground. Set detect.method: none (the whole photo)"
            " or give data.annotations for detect.method: learned; see results/align/contact_sheet.png"
        )


def detect_boxes(
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: ClassicalDetectSettings | Mapping,
    threads: int = 1,
    cache_dir=None,
) -> pd.DataFrame:
    """One box per train and test photo (settings: a mapping, e.g. a gallery's, is parsed).
    cache_dir: per-photo boxes kept across runs by the photo's SHA-1 and the settings (used when
    the tables have the photos' sha1; flukeline.core.photo_cache)."""
    settings = ClassicalDetectSettings.of(settings)
    columns = ["image", "split", "path"] + (["sha1"] if "sha1" in train and "sha1" in test else [])
    images = pd.concat([train[columns], test[columns]], ignore_index=True)
    method = settings.method
    min_area = float(settings.min_area_fraction)
    use_cache = cache_dir is not None and "sha1" in images
    cache = PhotoCache(cache_dir if use_cache else None, "detect-classical", [settings.to_dict(), THRESHOLD_VERSION])
    keys = [cache.key(sha1) for sha1 in images["sha1"]] if use_cache else None
    tasks = [(p, method, min_area) for p in images["path"]]
    # The cache is read and written here (it reads its packs once); the photos it lacks are
    # detected by worker processes.
    found = cache.get_or_compute(keys, len(tasks), lambda rows: _detect_rows(tasks, rows, threads), PACK_ENTRIES)
    found = [_box_of_entry(entry) for entry in found]
    table = pd.DataFrame([box.__dict__ for box, _ in found])
    table.insert(0, "split", images["split"].to_numpy())
    table.insert(0, "image", images["image"].to_numpy())
    log.info("detected %d images: %s", len(table), table["method"].value_counts().to_dict())
    _log_small_boxes(table, [area for _, area in found])
    return table


def _detect_rows(tasks: list, rows: list[int], threads: int) -> list[dict[str, np.ndarray]]:
    """The tasks' boxes as cache entries (box, photo area, method, score)."""
    found = parallel_map(_detect_one, [tasks[i] for i in rows], threads, processes=True, chunksize=16)
    return [
        {
            "box_area": np.array([box.x0, box.y0, box.x1, box.y1, area], np.int64),
            "method": np.array(box.method),
            "score": np.array(box.score),
        }
        for box, area in found
    ]


def _box_of_entry(entry: dict[str, np.ndarray]) -> tuple[Box, int]:
    """(Box, photo area in pixels) of a cache entry."""
    x0, y0, x1, y1, area = (int(v) for v in entry["box_area"])
    return Box(x0, y0, x1, y1, str(entry["method"]), float(entry["score"])), area


KEYPOINT_COLUMNS = ["image", "split", "keypoint", "x", "y", "confidence"]

MASK_COLUMNS = ["image", "split", "mask_path", "area", "score"]


def run(
    train_path, test_path, out_path, params: dict, threads: int = 1, keypoints_out=None, masks_out=None, cache_dir=None
) -> None:
    """detect (threshold or none): params, ClassicalDetectSettings' keys (the detect rule's JSON)."""
    settings = ClassicalDetectSettings.from_dict(params)
    table = detect_boxes(pd.read_parquet(train_path), pd.read_parquet(test_path), settings, threads, cache_dir)
    write_parquet_atomic(table, out_path)
    # Same tables as the learned detector writes, empty: downstream falls back to the boxes.
    if keypoints_out:
        float_columns = ("x", "y", "confidence")
        empty = pd.DataFrame({c: pd.Series(dtype="float64" if c in float_columns else "str") for c in KEYPOINT_COLUMNS})
        write_parquet_atomic(empty, keypoints_out)
    if masks_out:
        dtypes = {"area": "int64", "score": "float64"}
        empty = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "str")) for c in MASK_COLUMNS})
        write_parquet_atomic(empty, masks_out)
