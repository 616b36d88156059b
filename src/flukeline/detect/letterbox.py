"""Letterboxing: fit a photo of any size into the detector's fixed input without distortion,
and map predictions back to original pixels exactly.

Convention: pixel centres sit at integer coordinates. cv2.resize maps a source centre x to
(x + 0.5) * s - 0.5, so with the integer padding the forward map is x' = s_x * x + t_x; we keep
that per-image 2x3 matrix and invert it for points and masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    width: int  # original size
    height: int
    out_width: int  # detector input size
    out_height: int
    scaled_width: int
    scaled_height: int
    pad_left: int
    pad_top: int

    @staticmethod
    def fit(width: int, height: int, out_width: int, out_height: int) -> Letterbox:
        scale = min(out_width / width, out_height / height)
        scaled_w = min(out_width, max(1, round(width * scale)))
        scaled_h = min(out_height, max(1, round(height * scale)))
        return Letterbox(
            width,
            height,
            out_width,
            out_height,
            scaled_w,
            scaled_h,
            (out_width - scaled_w) // 2,
            (out_height - scaled_h) // 2,
        )

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine map from original pixel coordinates to detector input coordinates."""
        sx, sy = self.scaled_width / self.width, self.scaled_height / self.height
        return np.array([[sx, 0.0, 0.5 * sx - 0.5 + self.pad_left], [0.0, sy, 0.5 * sy - 0.5 + self.pad_top]])

    def apply(self, image: np.ndarray, interpolation: int | None = None, fill=0) -> np.ndarray:
        """The image resized into the detector input, the rest filled with `fill`."""
        if interpolation is None:
            shrinking = self.scaled_width < self.width
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        scaled = cv2.resize(image, (self.scaled_width, self.scaled_height), interpolation=interpolation)
        right = self.out_width - self.scaled_width - self.pad_left
        bottom = self.out_height - self.scaled_height - self.pad_top
        return cv2.copyMakeBorder(scaled, self.pad_top, bottom, self.pad_left, right, cv2.BORDER_CONSTANT, value=fill)

    def valid_region(self) -> np.ndarray:
        """Boolean mask of the detector input that shows the photo (not padding)."""
        inside = np.zeros((self.out_height, self.out_width), dtype=bool)
        inside[self.pad_top : self.pad_top + self.scaled_height, self.pad_left : self.pad_left + self.scaled_width] = (
            True
        )
        return inside

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Original pixel coordinates (N, 2) -> detector input coordinates."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return points @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Detector input coordinates (N, 2) -> original pixel coordinates."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (points - self.matrix[:, 2]) / np.diag(self.matrix[:, :2])

    def map_back(self, plane: np.ndarray) -> np.ndarray:
        """A float map over the detector input (e.g. mask probability) resampled onto the
        original pixel grid."""
        return cv2.warpAffine(
            plane.astype(np.float32),
            self.matrix,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
