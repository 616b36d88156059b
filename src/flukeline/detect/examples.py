"""The detector's training examples: the annotated train images (a mask, a box and/or a visible
configured keypoint), a stable held-out share (hash of seed and name) for detect-evaluate, keypoint
arrays with visibility flags, photos, masks and filled annotation boxes letterboxed to
`detect.model.input_size` (flukeline.detect.letterbox), and the pose and photometric augmentation
that moves masks and keypoints with the image."""

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


def annotated_images(
    train: pd.DataFrame, keypoints: pd.DataFrame, names: list[str], boxes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Train images with a mask, a box and/or at least one visible configured keypoint."""
    has_mask = train["mask_path"].notna()
    kp = keypoints[keypoints["keypoint"].isin(names) & (keypoints["visible"] == 1)]
    has_kp = train["image"].isin(set(kp["image"]))
    has_box = train["image"].isin(set(boxes["image"])) if boxes is not None and len(boxes) else False
    return train[has_mask | has_kp | has_box].reset_index(drop=True)


def box_lists(boxes: pd.DataFrame | None, images: pd.Series) -> list[np.ndarray]:
    """Per image the (B, 4) annotation boxes (x0, y0, x1, y1: pixel edges, x1 and y1 exclusive,
    as the annotate page and the demo write them); B = 0 for an image without one."""
    grouped = {}
    if boxes is not None and len(boxes):
        for image, part in boxes.groupby("image", sort=False):
            grouped[image] = part[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    return [grouped.get(image, np.zeros((0, 4))) for image in images]


def box_region(box: Letterbox, rects: np.ndarray) -> np.ndarray:
    """The union of the boxes, filled, on the detector input (uint8 0/1): a pixel is inside when
    its centre is. Box edges scale without the half-pixel shift of pixel centres."""
    region = np.zeros((box.out_height, box.out_width), np.uint8)
    sx, sy = box.scaled_width / box.width, box.scaled_height / box.height
    for x0, y0, x1, y1 in rects:
        # Centre j + 0.5 inside [edge0, edge1): j from ceil(edge0 - 0.5) to ceil(edge1 - 0.5) - 1,
        # at least one pixel so that a box narrower than an input pixel still marks its place.
        cols = [x0 * sx + box.pad_left, x1 * sx + box.pad_left]
        rows = [y0 * sy + box.pad_top, y1 * sy + box.pad_top]
        c0, c1 = int(np.ceil(cols[0] - 0.5)), int(np.ceil(cols[1] - 0.5))
        r0, r1 = int(np.ceil(rows[0] - 0.5)), int(np.ceil(rows[1] - 0.5))
        c0, r0 = min(max(c0, 0), box.out_width - 1), min(max(r0, 0), box.out_height - 1)
        region[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)] = 1
    return region


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
    path, mask_path, rects, size = task
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
    return image, mask, has_mask, box, box_region(box, rects)


def load_examples(frame: pd.DataFrame, size, workers: int = 1, boxes: pd.DataFrame | None = None):
    """Letterboxed photos (N, H, W, 3), masks (N, H, W; zeros without one), has-mask flags, the
    Letterbox of each, and the filled annotation boxes (N, H, W; zeros without one)."""
    rects = box_lists(boxes, frame["image"])
    tasks = [(p, m, r, tuple(size)) for p, m, r in zip(frame["path"], frame["mask_path"], rects)]
    out = parallel_map(_load_example, tasks, workers)
    empty = np.zeros((0, size[1], size[0]), np.uint8)
    images = np.stack([o[0] for o in out]) if out else np.zeros((0, size[1], size[0], 3), np.uint8)
    masks = np.stack([o[1] for o in out]) if out else empty
    regions = np.stack([o[4] for o in out]) if out else empty
    return images, masks, np.array([o[2] for o in out], bool), [o[3] for o in out], regions


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
