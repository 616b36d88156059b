"""Align stage (skeleton): crop each box with a margin at the output aspect ratio, then resize.

The crop window is widened or heightened to the output's aspect ratio around the box centre, so
the fluke is not stretched; parts outside the photo are filled by replicating its border.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.io import read_image_rgb, write_parquet_atomic
from flukeline.runtime import worker_count

log = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): width, height."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def crop_window(box, out_size, margin: float) -> tuple[float, float, float, float]:
    """Window (x0, y0, x1, y1) around box, grown by margin on each side, at out_size's aspect."""
    x0, y0, x1, y1 = (float(v) for v in box)
    width = max(x1 - x0, 1.0) * (1 + 2 * margin)
    height = max(y1 - y0, 1.0) * (1 + 2 * margin)
    aspect = out_size[0] / out_size[1]
    if width / height < aspect:
        width = height * aspect
    else:
        height = width / aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2


def crop_resize(rgb: np.ndarray, window, out_size) -> np.ndarray:
    """Map the window onto an out_size image with one affine warp (no intermediate crop)."""
    x0, y0, x1, y1 = window
    sx = out_size[0] / (x1 - x0)
    sy = out_size[1] / (y1 - y0)
    matrix = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], dtype=np.float64)
    # Area-like smoothing when shrinking a lot avoids aliasing the trailing-edge detail.
    if min(sx, sy) < 0.5:
        sigma = 0.5 / min(sx, sy) / 2
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma)
    return cv2.warpAffine(rgb, matrix, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _align_one(task):
    path, box, out_size, margin, out_png = task
    cv2.setNumThreads(1)
    rgb = read_image_rgb(path)
    window = crop_window(box, out_size, margin)
    crop = crop_resize(rgb, window, out_size)
    cv2.imwrite(out_png, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return window


def align_images(train, test, boxes, size: str, margin: float, crops_dir, threads: int = 1) -> pd.DataFrame:
    out_size = parse_size(size)
    images = pd.concat([train[["image", "split", "path"]], test[["image", "split", "path"]]], ignore_index=True)
    images = images.merge(boxes, on=["image", "split"], how="left", validate="one_to_one")
    if images["x0"].isna().any():
        missing = images.loc[images["x0"].isna(), "image"].tolist()[:5]
        raise ValueError(f"boxes table has no box for {missing} ...")
    crops_dir = Path(crops_dir)
    for split in images["split"].unique():
        (crops_dir / split).mkdir(parents=True, exist_ok=True)
    crop_paths = [str(crops_dir / s / (Path(i).stem + ".png")) for i, s in zip(images["image"], images["split"])]
    tasks = [
        (p, (r.x0, r.y0, r.x1, r.y1), out_size, margin, c)
        for p, r, c in zip(images["path"], images.itertuples(), crop_paths)
    ]
    workers = worker_count(threads)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            windows = list(pool.map(_align_one, tasks, chunksize=16))
    else:
        windows = [_align_one(t) for t in tasks]
    table = pd.DataFrame(windows, columns=["crop_x0", "crop_y0", "crop_x1", "crop_y1"])
    table.insert(0, "crop_path", [str(Path(c).resolve()) for c in crop_paths])
    table.insert(0, "method", "box")
    table.insert(0, "split", images["split"].to_numpy())
    table.insert(0, "image", images["image"].to_numpy())
    log.info("aligned %d images to %s", len(table), size)
    return table


def run(train_path, test_path, boxes_path, size, margin, table_path, crops_dir, threads=1) -> None:
    table = align_images(
        pd.read_parquet(train_path), pd.read_parquet(test_path), pd.read_parquet(boxes_path), size, margin, crops_dir, threads
    )
    write_parquet_atomic(table, table_path)
