"""Keypoint heatmaps of the learned detector: Gaussian training targets, the spatial softmax of
the heatmap logits, peak decoding with sub-pixel refinement (a parabola through the log values,
exact for Gaussian peaks), and each keypoint's confidence as the probability mass near its peak."""

from __future__ import annotations

import numpy as np


def gaussian_targets(points: np.ndarray, valid: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """(K, H, W) float32 maps with a unit-height Gaussian at each valid point (input pixels);
    invalid points give an all-zero map (their loss weight is zero anyway)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    maps = np.zeros((len(points), height, width), dtype=np.float32)
    for k, ((x, y), ok) in enumerate(zip(points, valid)):
        if ok:
            maps[k] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return maps


def decode_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per map of a (..., K, H, W) array: the arg-max refined by a parabola through it and its
    neighbours along each axis (sub-pixel), and the peak value as confidence.
    Returns points (..., K, 2) as (x, y) and confidences (..., K)."""
    maps = np.asarray(maps, dtype=np.float64)
    lead, (height, width) = maps.shape[:-2], maps.shape[-2:]
    flat = maps.reshape(-1, height, width)
    points = np.zeros((len(flat), 2))
    confidence = np.zeros(len(flat))
    for i, plane in enumerate(flat):
        y, x = np.unravel_index(int(np.argmax(plane)), plane.shape)
        confidence[i] = plane[y, x]
        points[i] = (x + _parabola_offset(plane, y, x, axis=1), y + _parabola_offset(plane, y, x, axis=0))
    return points.reshape(*lead, 2), confidence.reshape(lead)


def _parabola_offset(plane: np.ndarray, y: int, x: int, axis: int) -> float:
    centre = plane[y, x]
    if axis == 1:
        if not 0 < x < plane.shape[1] - 1:
            return 0.0
        before, after = plane[y, x - 1], plane[y, x + 1]
    else:
        if not 0 < y < plane.shape[0] - 1:
            return 0.0
        before, after = plane[y - 1, x], plane[y + 1, x]
    # A Gaussian is a parabola in log space: fit there, so the vertex is exact for Gaussian peaks.
    logs = np.log(np.maximum([before, centre, after], 1e-6))
    curvature = logs[0] - 2 * logs[1] + logs[2]
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (logs[0] - logs[2]) / curvature, -0.5, 0.5))


def heatmap_probabilities(heat_logits: np.ndarray) -> np.ndarray:
    """Spatial softmax of (N, K, H, W) heatmap logits."""
    flat = heat_logits.reshape(*heat_logits.shape[:2], -1)
    flat = np.exp(flat - flat.max(axis=2, keepdims=True))
    return (flat / flat.sum(axis=2, keepdims=True)).reshape(heat_logits.shape)


def peak_mass(prob: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Confidence of each decoded keypoint: the probability mass within `radius` pixels of it
    (near 1 for a sharp single peak, low for a spread-out or ambiguous map)."""
    n, k, height, width = prob.shape
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            x, y = int(round(points[i, j, 0])), int(round(points[i, j, 1]))
            out[i, j] = prob[i, j, max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].sum()
    return np.clip(out, 0.0, 1.0)
