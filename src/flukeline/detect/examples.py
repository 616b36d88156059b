"""The detector's training examples: the annotated train images (a mask and/or a visible
configured keypoint), a stable held-out share (hash of seed and name) for detect-evaluate, keypoint
arrays with visibility flags, photos and masks letterboxed to `detect.model.input_size`
(flukeline.detect.letterbox), and the pose and photometric augmentation that moves masks and
keypoints with the image."""

from __future__ import annotations

import hashlib

import albumentations as A
import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.runtime import parallel_map
from flukeline.detect.letterbox import Letterbox
from flukeline.detect.unet import PAD_RGB


def annotated_images(train: pd.DataFrame, keypoints: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Train images with a mask and/or at least one visible configured keypoint."""
    has_mask = train["mask_path"].notna()
    kp = keypoints[keypoints["keypoint"].isin(names) & (keypoints["visible"] == 1)]
    has_kp = train["image"].isin(set(kp["image"]))
    return train[has_mask | has_kp].reset_index(drop=True)


def holdout_split(images: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Stable per-image holdout flag (hash of seed and name), independent of row order."""
    scores = np.array([int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 16**8 for name in images])
    return scores < fraction


def keypoint_array(keypoints: pd.DataFrame, images: pd.Series, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) coordinates and (N, K) labelled-and-visible flags."""
    points = np.full((len(images), len(names), 2), np.nan)
    table = keypoints[keypoints["keypoint"].isin(names)]
    row_of = {name: i for i, name in enumerate(images)}
    col_of = {name: k for k, name in enumerate(names)}
    for r in table.itertuples(index=False):
        i = row_of.get(r.image)
        if i is not None and r.visible == 1:
            points[i, col_of[r.keypoint]] = (r.x, r.y)
    return points, np.isfinite(points).all(axis=2)


def _load_example(task):
    path, mask_path, size = task
    cv2.setNumThreads(1)
    rgb = read_image_rgb(path)
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], *size)
    image = box.apply(rgb, fill=PAD_RGB)
    # No mask: None, NaN, or pd.NA (ingest's string column when data.annotations names no masks folder).
    if mask_path is None or pd.isna(mask_path):
        mask = np.zeros(image.shape[:2], np.uint8)
        has_mask = False
    else:
        raw = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if raw is None or raw.shape != rgb.shape[:2]:
            raise InputError(
                f"{mask_path}: unreadable mask or its size differs from {path} {rgb.shape[1]}x{rgb.shape[0]}"
            )
        mask = (box.apply((raw > 127).astype(np.float32), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
        has_mask = True
    return image, mask, has_mask, box


def load_examples(frame: pd.DataFrame, size, workers: int = 1):
    tasks = [(p, m, tuple(size)) for p, m in zip(frame["path"], frame["mask_path"])]
    out = parallel_map(_load_example, tasks, workers)
    images = np.stack([o[0] for o in out]) if out else np.zeros((0, size[1], size[0], 3), np.uint8)
    masks = np.stack([o[1] for o in out]) if out else np.zeros((0, size[1], size[0]), np.uint8)
    return images, masks, np.array([o[2] for o in out], bool), [o[3] for o in out]


def detector_augmentation(seed: int) -> A.Compose:
    """Pose and photometric jitter; masks and keypoints move with the image."""
    return A.Compose(
        [
            A.Affine(
                scale=(0.8, 1.15),
                translate_percent=(-0.08, 0.08),
                rotate=(-20, 20),
                border_mode=cv2.BORDER_CONSTANT,
                fill=PAD_RGB,
                fill_mask=0,
                p=0.9,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=0, p=0.5),
            A.ToGray(p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        seed=seed,
    )
