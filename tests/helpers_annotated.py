"""Tiny annotated photos and a detector that trains on them in seconds, shared by
tests/unit/test_detect.py (fluke shapes with masks and keypoints), tests/unit/test_detect_boxes_only.py
(notched blocks with boxes, masks on request) and tests/workflow/test_annotate.py (the detector
settings, trained on what the annotation page exported).

`annotated_photos` writes n small photos (a bright shape on a dark ground, random sizes from a
seeded generator) and optionally their masks into a folder, and returns the three tables the
detector reads: train rows (image, path, split, mask_path), keypoints (image, keypoint, x, y,
visible) and boxes (image, x0, y0, x1, y1, exclusive ends: the mask's extent). The shape decides
what is drawn and whether keypoints exist; the seed and the name prefix fix the data exactly (the
detector's holdout split hashes the names, so a test asserting a non-empty holdout depends on them).
"""

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

NAMES = ["left_tip", "notch", "right_tip"]

# A photo drawer: (generator) -> (BGR image, 0/255 mask, (3, 2) keypoints in NAMES order or None).
Shape = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def tiny_detector(**changes) -> dict:
    """detect.model settings of a detector that trains in seconds on CPU (a fresh dict, with `changes`)."""
    params = {
        "encoder": "tu-lcnet_100",
        "input_size": [64, 48],
        "decoder_channels": [16, 16, 8, 8, 8],
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.003,
        "heatmap_sigma": 2.0,
        "holdout_fraction": 0.25,
        "keypoints": NAMES,
    }
    return dict(params, **changes)


def fluke(rng: np.random.Generator):
    """A fluke: the tips and notch joined to a point below, grey 220 on 40; 80-139 x 50-89 pixels."""
    w, h = int(rng.integers(80, 140)), int(rng.integers(50, 90))
    mask = np.zeros((h, w), np.uint8)
    points = np.array([[w * 0.2, h * 0.3], [w * 0.5, h * 0.5], [w * 0.8, h * 0.3]])
    cv2.fillPoly(mask, [np.round(np.vstack([points, [[w * 0.5, h * 0.8]]])).astype(np.int32)], 255)
    image = np.full((h, w, 3), 40, np.uint8)
    image[mask > 0] = 220
    return image, mask, points


def notched_block(rng: np.random.Generator):
    """A rectangle of half the photo's size at a random place with a notch cut into its top half,
    grey 210 on 30; 90-139 x 60-89 pixels; no keypoints."""
    w, h = int(rng.integers(90, 140)), int(rng.integers(60, 90))
    x0, y0 = int(rng.integers(5, w // 3)), int(rng.integers(5, h // 3))
    x1, y1 = x0 + w // 2, y0 + h // 2
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    mask[y0 : (y0 + y1) // 2, (x0 + x1) // 2 - 2 : (x0 + x1) // 2 + 2] = 0  # the notch
    image = np.full((h, w, 3), 30, np.uint8)
    image[mask > 0] = 210
    return image, mask, None


def annotated_photos(
    folder: Path, n: int, *, shape: Shape, seed: int, prefix: str, masks: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """n photos `<prefix><i>.jpg` of `shape` in folder (masks beside them as `<prefix><i>.png` when
    `masks`, else mask_path None): (train, keypoints, boxes) tables, all split "train"."""
    rows, keypoint_rows, box_rows = [], [], []
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask, points = shape(rng)
        name = f"{prefix}{i}.jpg"
        cv2.imwrite(str(folder / name), image)
        mask_path = None
        if masks:
            mask_path = str(folder / f"{prefix}{i}.png")
            cv2.imwrite(mask_path, mask)
        rows.append({"image": name, "path": str(folder / name), "split": "train", "mask_path": mask_path})
        if points is not None:
            keypoint_rows += [
                {"image": name, "keypoint": k, "x": x, "y": y, "visible": 1} for k, (x, y) in zip(NAMES, points)
            ]
        ys, xs = np.nonzero(mask)
        box = {"x0": xs.min(), "y0": ys.min(), "x1": xs.max() + 1, "y1": ys.max() + 1}
        box_rows.append({"image": name, **{k: float(v) for k, v in box.items()}})
    keypoints = pd.DataFrame(keypoint_rows, columns=["image", "keypoint", "x", "y", "visible"])
    return pd.DataFrame(rows), keypoints, pd.DataFrame(box_rows)
