"""Fluke boxes: the `Box` every detector returns (x0, y0 inclusive, x1, y1 exclusive, in
original pixels, with the method that produced it and a score), and the box geometry of the learned
detector's fusion: the largest mask component, a mask's box, the box of the confident keypoints
grown x1.2 about its centre (2nd Kaggle place), clipping to the image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int
    method: str
    score: float


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def mask_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def keypoint_box(
    points: np.ndarray, confidence: np.ndarray, min_confidence: float, width: int, height: int, expand: float = 1.2
):
    """Box of the confident keypoints grown by `expand` about its centre (2nd Kaggle place)."""
    good = points[confidence >= min_confidence]
    if len(good) < 2:
        return None
    (x0, y0), (x1, y1) = good.min(axis=0), good.max(axis=0)
    cx, cy, half_w, half_h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * expand / 2, (y1 - y0) * expand / 2
    return clip_box((cx - half_w, cy - half_h, cx + half_w + 1, cy + half_h + 1), width, height)


def clip_box(box, width: int, height: int):
    x0, y0, x1, y1 = box
    x0, y0 = int(np.clip(np.floor(x0), 0, width - 1)), int(np.clip(np.floor(y0), 0, height - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, width)), int(np.clip(np.ceil(y1), y0 + 1, height))
    return x0, y0, x1, y1
