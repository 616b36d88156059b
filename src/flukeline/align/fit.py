"""One image's transform onto the landmark template (`fit_image` -> `Fit`): a similarity or
affine fit of detect's confident landmarks (OpenCV RANSAC, image -> template, so the threshold and
the residual are in span units at any resolution). The fit is rejected for too few landmarks,
outliers, poor coverage of the template's width, a degenerate or mirrored fit, a large residual,
an upside-down rotation or a scale that disagrees with detect's box; the image then gets its
box-derived transform, with the reason recorded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from flukeline.align.geometry import apply, box_transform
from flukeline.align.settings import AlignSettings

# A landmark further than this many max_residuals from the fitted template point is an outlier
# for RANSAC (ground-truth demo landmarks deviate at most ~0.1 span from the mean template).
INLIER_FACTOR = 1.5

# An affine fit that squashes one axis this much more than the other is no fluke pose (the demo's
# strongest tilt foreshortens by ~1.3); it means collinear or mislabelled landmarks.
MAX_ANISOTROPY = 3.0

# The fitted landmarks must spread over at least this share of the template's width (e.g. a tip
# and the notch); on a learned detector's output this removes fits to bunched-up landmarks.
MIN_COVERAGE = 0.5


@dataclass(frozen=True)
class Fit:
    transform: np.ndarray  # 2x3, original pixels -> span frame
    method: str  # "landmarks" or "box"
    reason: str  # "ok" or why the landmarks were not used
    n_landmarks: int  # landmarks the fit used (RANSAC inliers), or the usable ones when it failed
    residual: float  # RMS distance (span units) of those landmarks from the template; NaN without a fit


def fit_image(names, xy, confidence, box, settings: AlignSettings, frame, box_is_whole_image: bool = False) -> Fit:
    """The transform of one image: landmark fit when plausible, box-derived otherwise.

    A box covering the whole photo is detect's "found nothing": it says nothing about the
    fluke's size, so the landmark scale is not checked against it."""
    fallback = box_transform(box, frame)
    names = np.asarray(names, dtype=object)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    confidence = np.asarray(confidence, np.float64)
    usable = (
        (confidence >= settings.min_keypoint_confidence)
        & np.isfinite(xy).all(axis=1)
        & np.array([n in settings.template for n in names], bool).reshape(-1)
    )
    n_usable = int(usable.sum())

    def box_fit(reason, n=n_usable, residual=math.nan):
        return Fit(fallback, "box", reason, int(n), float(residual))

    if n_usable < settings.min_points:
        return box_fit("few_landmarks")
    src = xy[usable]
    dst = np.array([settings.template[n] for n in names[usable]], np.float64)
    if np.ptp(src, axis=0).max() < 1.0:
        return box_fit("degenerate")  # all landmarks within one pixel: no scale or rotation
    estimate = cv2.estimateAffinePartial2D if settings.transform == "similarity" else cv2.estimateAffine2D
    # Fitting image -> template puts the RANSAC threshold and the residual in span units, so they
    # mean the same at every image resolution. OpenCV's RANSAC seeds its own RNG: deterministic.
    matrix, inliers = estimate(
        src.reshape(-1, 1, 2),
        dst.reshape(-1, 1, 2),
        method=cv2.RANSAC,
        ransacReprojThreshold=INLIER_FACTOR * settings.max_residual,
        maxIters=2000,
        confidence=0.999,
        refineIters=10,
    )
    if matrix is None or not np.isfinite(matrix).all():
        return box_fit("fit_failed")
    inliers = np.asarray(inliers, bool).reshape(-1)
    n_in = int(inliers.sum())
    errors = np.linalg.norm(apply(matrix, src) - dst, axis=1)
    residual = float(np.sqrt(np.mean(errors[inliers] ** 2))) if n_in else math.nan
    if n_in < settings.min_points:
        return box_fit("outliers", n_in, residual)
    # Inliers bunched on one part of the template (a detector that put several landmarks in one
    # place, or one side of the fluke only) leave the scale and rotation to chance.
    if np.ptp(dst[inliers, 0]) < MIN_COVERAGE * (frame[2] - frame[0]):
        return box_fit("coverage", n_in, residual)
    linear = matrix[:, :2]
    singular = np.linalg.svd(linear, compute_uv=False)
    # det <= 0 is a mirrored fluke: left and right landmarks swapped.
    if np.linalg.det(linear) <= 0 or singular[1] <= 0 or singular[0] / singular[1] > MAX_ANISOTROPY:
        return box_fit("degenerate", n_in, residual)
    if residual > settings.max_residual:
        return box_fit("residual", n_in, residual)
    # The trailing-edge landmarks are nearly collinear, so an upside-down fit can match them well;
    # photos of flukes are not taken upside down.
    if abs(math.degrees(math.atan2(linear[1, 0], linear[0, 0]))) > settings.max_rotation_deg:
        return box_fit("rotation", n_in, residual)
    # Landmarks and box come from one detector and should agree on the fluke's size. The width is
    # compared: the template frame spans the fluke tip to tip, while a box's height also depends
    # on how much body and water the detector included.
    frame_px = (frame[2] - frame[0]) / math.sqrt(abs(np.linalg.det(linear)))
    ratio = frame_px / max(float(box[2]) - float(box[0]), 1.0)
    if not box_is_whole_image and not (1 / settings.max_scale_ratio <= ratio <= settings.max_scale_ratio):
        return box_fit("scale", n_in, residual)
    return Fit(matrix, "landmarks", "ok", n_in, residual)
