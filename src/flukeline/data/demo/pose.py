"""Where a sighting puts an individual in its frame: `Pose`, a pinhole-camera homography from
span units to pixels (scale, in-plane roll, out-of-plane yaw and pitch) plus a gentle non-rigid
flex of the blade; `sample_pose`, drawn from the preset's framing knobs; and `warp_individual`,
which maps the pre-rendered texture into the frame with one cv2.remap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from flukeline.data.demo.individual import CANON_BOTTOM, CANON_HALF_WIDTH, CANON_TOP, POSE_ANCHOR, Individual


@dataclass
class Pose:
    """Where one fluke sits in an image: perspective homography from span units to pixels,
    plus the flex (bending) applied in span units before it."""

    homography: np.ndarray
    span_px: float
    curl: float
    bend_left: float
    bend_right: float
    roll_deg: float
    yaw_deg: float
    pitch_deg: float

    def _flex_x(self, x):
        r = np.minimum(np.abs(2 * x), 1.3)
        return x - 0.06 * np.where(x < 0, self.bend_left, self.bend_right) * x * r

    def _curl_y(self, x):
        return -0.06 * self.curl * np.minimum(np.abs(2 * x), 1.3) ** 2

    def flex(self, pts: np.ndarray) -> np.ndarray:
        """Bend the blade (span units): each half compresses as if turned away, tips curl."""
        x, y = pts[..., 0], pts[..., 1]
        return np.stack([self._flex_x(x), y + self._curl_y(x)], axis=-1)

    def unflex_xy(self, fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `flex`: x' = g(x) is monotonic, so invert it by 1-D interpolation."""
        grid = np.linspace(-0.7, 0.7, 561)
        x = np.interp(fx, self._flex_x(grid), grid).astype(np.float32)
        return x, fy - self._curl_y(x).astype(np.float32)

    def project(self, pts: np.ndarray) -> np.ndarray:
        flexed = self.flex(np.asarray(pts, np.float64))
        h = np.concatenate([flexed, np.ones((*flexed.shape[:-1], 1))], axis=-1) @ self.homography.T
        return h[..., :2] / h[..., 2:3]


def _homography(span_px, centre, roll, yaw, pitch, distance):
    """Plane z = 0 (span units) seen by a pinhole camera: K [r1 r2 t], anchored at POSE_ANCHOR."""
    cr, sr = math.cos(roll), math.sin(roll)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rot = rz @ rx @ ry
    focal = span_px * distance
    k = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]])
    anchor = np.array([[1, 0, -POSE_ANCHOR[0]], [0, 1, -POSE_ANCHOR[1]], [0, 0, 1]])
    h = k @ np.column_stack([rot[:, 0], rot[:, 1], [0, 0, distance]]) @ anchor
    return h / h[2, 2]


def sample_pose(rng, width, height, ind: Individual, cfg, span_fraction=None) -> Pose:
    """Scale, in-plane rotation, out-of-plane tilt, flex and position of a fluke in a frame."""
    lo, hi = cfg["scale_range"]
    frac = span_fraction if span_fraction is not None else math.exp(rng.uniform(math.log(lo), math.log(hi)))
    roll = math.radians(
        float(np.clip(rng.normal(0, cfg["rotation_deg"] / 2), -cfg["rotation_deg"], cfg["rotation_deg"]))
    )
    tilt = cfg["tilt_deg"]
    yaw = math.radians(rng.uniform(-tilt, tilt))
    pitch = math.radians(rng.uniform(-0.6 * tilt, 0.6 * tilt))
    distance = rng.uniform(2.5, 7.0)
    flex = cfg["flex"]
    curl, bend_l, bend_r = rng.uniform(-0.5, 1.0) * flex, rng.uniform(0, 1) * flex, rng.uniform(0, 1) * flex
    crop = rng.random() < cfg["crop_prob"]
    span_px = frac * width * (rng.uniform(1.0, 1.3) if crop else 1.0)

    def pose_at(centre):
        angles = (math.degrees(roll), math.degrees(yaw), math.degrees(pitch))
        return Pose(_homography(span_px, centre, roll, yaw, pitch, distance), span_px, curl, bend_l, bend_r, *angles)

    visible_part = ind.keypoints[[0, 1, 2, 5, 6, 7]]
    for _ in range(3):  # shrink until the fluke's height fits the frame
        pose = pose_at((0, 0))
        pts = pose.project(visible_part)
        extent = pts.max(0) - pts.min(0)
        shrink = min(1.0, 0.92 * height / max(extent[1], 1e-6), 0.97 * width / max(extent[0], 1e-6))
        if crop or shrink >= 0.999:
            break
        span_px *= shrink
    lo_xy, hi_xy = pts.min(0), pts.max(0)
    slack = 0.15 * (hi_xy - lo_xy) if crop else np.zeros(2)
    centre = []
    for axis, size in ((0, width), (1, height)):
        low, high = -lo_xy[axis] - slack[axis], size - hi_xy[axis] + slack[axis]
        if high < low:
            low = high = (low + high) / 2
        centre.append(rng.uniform(low, high))
    return pose_at(centre)


def warp_individual(ind: Individual, pose: Pose, height: int, width: int):
    """Premultiplied BGRA of the posed fluke over the frame (and its ROI), via one cv2.remap."""
    corners = np.array(
        [
            [-CANON_HALF_WIDTH, CANON_TOP],
            [CANON_HALF_WIDTH, CANON_TOP],
            [CANON_HALF_WIDTH, CANON_BOTTOM],
            [-CANON_HALF_WIDTH, CANON_BOTTOM],
        ]
    )
    dense = np.concatenate([corners, ind.outline[::8]])
    proj = pose.project(dense)
    x0, y0 = np.floor(proj.min(0)).astype(int) - 2
    x1, y1 = np.ceil(proj.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None, (0, 0, 0, 0)
    # Pick the pyramid level whose resolution is just above the on-screen one (no aliasing).
    level = 0
    while level + 1 < len(ind.levels) and ind.frames[level + 1].span_px >= 1.1 * pose.span_px:
        level += 1
    frame = ind.frames[level]
    inv = np.linalg.inv(pose.homography).astype(np.float32)
    gx = np.arange(x0, x1, dtype=np.float32)[None, :]
    gy = np.arange(y0, y1, dtype=np.float32)[:, None]
    hw = 1 / (inv[2, 0] * gx + inv[2, 1] * gy + inv[2, 2])
    span_x, span_y = pose.unflex_xy(
        (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) * hw, (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) * hw
    )
    map_x = span_x * np.float32(frame.span_px) + np.float32(frame.origin_x)
    map_y = span_y * np.float32(frame.span_px) + np.float32(frame.origin_y)
    patch = cv2.remap(ind.levels[level], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, (x0, y0, x1, y1)
