"""Synthetic photos for the local-feature member's tests (tests/unit/test_local_*.py): an
individual's pattern, and another sighting of it (turned, cropped, resized back)."""

import cv2
import numpy as np


def textured(seed: int, size=(256, 128)) -> np.ndarray:
    """A grayscale 'fluke' with an individual pattern: random ellipses, lines and spots on a
    smooth background (corners and blobs for SIFT, different for every seed)."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = np.full((h, w), 90, np.uint8)
    for _ in range(40):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, 18)), int(rng.integers(3, 12)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, int(rng.integers(0, 255)), -1)
    for _ in range(12):
        a = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        b = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(image, a, b, int(rng.integers(0, 255)), int(rng.integers(1, 4)))
    return cv2.GaussianBlur(image, (3, 3), 0.8)


def rotated_crop(image: np.ndarray, degrees: float = 12.0, crop: float = 0.1) -> np.ndarray:
    """The same photo turned, cropped by `crop` on each side and resized back (another sighting
    of the same pattern, roughly aligned)."""
    h, w = image.shape
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h), borderValue=90)
    dy, dx = int(h * crop), int(w * crop)
    return cv2.resize(turned[dy : h - dy, dx : w - dx], (w, h), interpolation=cv2.INTER_LINEAR)
