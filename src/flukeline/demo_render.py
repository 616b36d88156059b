"""Procedural renderer behind `flukeline.demo`: individuals, scenes and camera effects.

An *individual* is rendered once in a canonical frame (span-normalised units: tips at x = ±0.5,
notch at the origin, y down) as a premultiplied BGRA texture with a small pyramid. A *sighting*
places it in a scene with one homography (plus a gentle non-rigid flex), then adds the water it
emerges from, spray, occluders and camera effects. Everything is vectorised numpy/OpenCV; all
randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

KEYPOINT_NAMES = (
    "left_tip",
    "notch",
    "right_tip",
    "left_trailing_mid",
    "right_trailing_mid",
    "peduncle",
    "left_leading_mid",
    "right_leading_mid",
)

# Canonical box in span units (x right, y down; origin at the notch's level on the midline).
CANON_HALF_WIDTH = 0.56
CANON_TOP = -0.26
CANON_BOTTOM = 0.90
# The point the camera rotates the fluke about (roughly its visual centre).
POSE_ANCHOR = (0.0, 0.12)

# Kaggle 2019 image sizes (width, height) with their share of the data; the rest is "other".
KAGGLE_SIZES = (
    ((1050, 700), 0.138),
    ((1050, 600), 0.090),
    ((1050, 450), 0.064),
    ((1050, 525), 0.051),
    ((700, 500), 0.022),
    ((1050, 591), 0.010),
    ((1050, 701), 0.014),
)
KAGGLE_WIDTH = 1050


# --------------------------------------------------------------------------------------------
# Canonical individuals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalFrame:
    """Pixel raster of the canonical box: pixel = origin + span_px * (x, y)."""

    span_px: float
    width: int
    height: int
    origin_x: float
    origin_y: float

    @staticmethod
    def for_span(span_px: int) -> "CanonicalFrame":
        half = math.ceil(CANON_HALF_WIDTH * span_px)
        width = 2 * half + 1  # odd, so that flipping columns mirrors exactly about x = 0
        height = math.ceil((CANON_BOTTOM - CANON_TOP) * span_px)
        return CanonicalFrame(float(span_px), width, height, float(half), -CANON_TOP * span_px)

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        return points * self.span_px + (self.origin_x, self.origin_y)

    def halved(self) -> "CanonicalFrame":
        # cv2.pyrDown puts pixel i of the next level at position 2i of this one.
        return CanonicalFrame(
            self.span_px / 2, (self.width + 1) // 2, (self.height + 1) // 2, self.origin_x / 2, self.origin_y / 2
        )


@dataclass
class Individual:
    """One animal, pre-rendered in the canonical frame."""

    levels: list[np.ndarray]  # premultiplied BGRA float32 pyramid, level 0 first
    frames: list[CanonicalFrame]
    keypoints: np.ndarray  # (len(KEYPOINT_NAMES), 2) span units
    outline: np.ndarray  # (N, 2) closed polygon, span units
    trailing_edge: np.ndarray  # (M, 2) points of the trailing edge (tip to tip), span units
    peduncle_bottom: np.ndarray  # (2, 2) lower corners of the peduncle, span units
    whiteness: np.ndarray = field(repr=False)  # level-0 pigmentation in [0, 1] (tests, diagnostics)


@dataclass(frozen=True)
class Population:
    """What all individuals of one dataset share (seeded): `identity_similarity` pulls everybody
    towards it, so high similarity means look-alike animals."""

    coarse: np.ndarray
    medium: np.ndarray
    fine: np.ndarray


COARSE_GRID = (7, 12)
MEDIUM_GRID = (14, 24)
FINE_GRID = (44, 80)


def make_population(rng: np.random.Generator) -> Population:
    return Population(
        rng.standard_normal(COARSE_GRID), rng.standard_normal(MEDIUM_GRID), rng.standard_normal(FINE_GRID)
    )


def _bezier(points: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    if len(points) == 3:
        p0, p1, p2 = points
        return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _sample_outline(rng: np.random.Generator, similarity: float):
    """Fluke outline in span units: trailing edge on top with a median notch, tips at the upper
    left and right, leading edges running down and in to a concave fillet on the peduncle.

    Identity lives in the trailing edge: serration pattern, nicks, bites, tip shapes; each half
    gets its own marks so a mirrored fluke is a different animal."""
    spread = 1.0 - similarity

    def vary(mean, sd, lo, hi):
        return float(np.clip(mean + spread * rng.normal(0.0, sd), lo, hi))

    chord = vary(0.31, 0.03, 0.24, 0.38)
    ped_half = vary(0.062, 0.008, 0.045, 0.08)
    notch_depth = vary(0.04, 0.012, 0.015, 0.07)
    notch_width = vary(0.035, 0.008, 0.02, 0.055)
    tip_height = vary(0.06, 0.025, 0.0, 0.13)
    tip_exp = vary(1.8, 0.5, 1.1, 3.0)
    lobe = vary(0.025, 0.012, 0.0, 0.05)
    lobe_pos = vary(0.35, 0.08, 0.2, 0.55)
    le_bulge = vary(0.06, 0.025, 0.0, 0.11)
    fillet = vary(0.07, 0.02, 0.03, 0.11)
    serration = vary(0.006, 0.003, 0.001, 0.012)
    serration_count = int(round(vary(26, 7, 12, 40)))
    nick_rate = 1.6 * spread

    u = np.linspace(0.0, 1.0, 240)
    halves = {}
    for side in (-1, 1):
        half_span = 0.5 * (1 + spread * rng.normal(0.0, 0.015))
        tip_h = max(0.0, tip_height + spread * rng.normal(0.0, 0.01))
        y = -tip_h * u ** max(1.05, tip_exp + spread * rng.normal(0, 0.2))
        y -= lobe * np.exp(-(((u - lobe_pos) / 0.22) ** 2)) * (1 + spread * rng.normal(0, 0.3))
        base = y.copy()
        # Median notch: a V shared by both halves (u = 0 is the same point on both sides).
        y += notch_depth * np.clip(1.0 - u * half_span / notch_width, 0.0, None) ** 1.6
        # Scalloped, serrated edge: small concave dips between sharp points.
        knots = np.sort(rng.uniform(notch_width / half_span, 0.97, serration_count))
        knots = np.concatenate([[notch_width / half_span], knots, [1.0]])
        idx = np.clip(np.searchsorted(knots, u, side="right") - 1, 0, len(knots) - 2)
        left, right = knots[idx], knots[idx + 1]
        centre, half_w = (left + right) / 2, np.maximum((right - left) / 2, 1e-6)
        amp = serration * rng.uniform(0.3, 1.4, len(knots) - 1)[idx] * np.sqrt(half_w / (0.5 / serration_count))
        inside = (u >= knots[0]) & (u <= 1.0)
        y += np.where(inside, amp * np.clip(1 - ((u - centre) / half_w) ** 2, 0, None), 0.0)
        # Nicks and bites: the marks researchers actually match on.
        for _ in range(rng.poisson(nick_rate)):
            c, depth = rng.uniform(0.1, 0.92), rng.uniform(0.01, 0.045)
            width, shape = rng.uniform(0.008, 0.035) / half_span, rng.uniform(0.5, 2.2)
            y += depth * np.clip(1 - np.abs(u - c) / width, 0, None) ** shape
        if rng.random() < 0.15 * spread:
            c, depth, width = rng.uniform(0.25, 0.85), rng.uniform(0.03, 0.07), rng.uniform(0.04, 0.1) / half_span
            y += depth * np.clip(1 - np.abs(u - c) / width, 0, None) ** 0.35
        # Tip shape: a rounded tip drops the end of the trailing edge a little.
        round_w, drop = rng.uniform(0.02, 0.1), rng.uniform(0.0, 0.035) * spread
        y += drop * np.clip((u - (1 - round_w)) / round_w, 0, 1) ** 2
        tip = np.array([side * half_span, y[-1]])
        junction = np.array([side * ped_half, chord])
        chord_dir = junction - tip
        outward = side * np.array([chord_dir[1], -chord_dir[0]]) / np.linalg.norm(chord_dir)
        leading = _bezier(
            np.array(
                [
                    tip,
                    tip + 0.4 * chord_dir + le_bulge * rng.uniform(0.7, 1.3) * outward,
                    junction + (side * fillet * 0.3, -fillet * rng.uniform(0.8, 1.2)),
                    junction,
                ]
            ),
            120,
        )
        # Keep the blade at least 40% of its local chord thick under any nick.
        lead_y = np.interp(u * half_span, np.abs(leading[::-1, 0]), leading[::-1, 1])
        y = np.minimum(y, base + 0.6 * (lead_y - base))
        y[-1] = tip[1]
        trailing = np.stack([side * half_span * u, y], axis=1)
        halves[side] = (trailing, leading, junction)

    bottom_y = chord + 0.42
    polygon, peduncle_bottom = [], []
    for side in (-1, 1):
        trailing, leading, junction = halves[side]
        bottom = np.array([side * ped_half * 1.7, bottom_y])
        peduncle = _bezier(np.array([junction, junction + (-side * 0.03 * ped_half, 0.2), bottom]), 40)
        peduncle_bottom.append(bottom)
        if side < 0:  # bottom-left, up the peduncle, leading edge to the tip, trailing edge to the notch
            polygon += [peduncle[::-1], leading[::-1], trailing[::-1]]
        else:  # notch to right tip, leading edge down, peduncle down
            polygon += [trailing[1:], leading, peduncle]
    outline = np.concatenate(polygon)
    left_trailing, left_leading, left_junction = halves[-1]
    right_trailing, right_leading, right_junction = halves[1]
    keypoints = np.array(
        [
            left_trailing[-1],
            left_trailing[0],
            right_trailing[-1],
            left_trailing[len(u) // 2],
            right_trailing[len(u) // 2],
            (left_junction + right_junction) / 2,
            left_leading[len(left_leading) // 2],
            right_leading[len(right_leading) // 2],
        ]
    )
    trailing_edge = np.concatenate([left_trailing[::-1], right_trailing[1:]])
    return outline, keypoints, trailing_edge, np.array(peduncle_bottom)


@lru_cache(maxsize=8)
def _canonical_grid(frame: CanonicalFrame) -> tuple[np.ndarray, np.ndarray]:
    xs = (np.arange(frame.width, dtype=np.float32) - frame.origin_x) / frame.span_px
    ys = (np.arange(frame.height, dtype=np.float32) - frame.origin_y) / frame.span_px
    return xs, ys


def _smooth_field(grid: np.ndarray, frame: CanonicalFrame) -> np.ndarray:
    """Upsample a coarse random grid to the canonical raster: resolution-independent patterns."""
    out = cv2.resize(grid.astype(np.float32), (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)
    return out * np.float32(1 / max(float(out[::4, ::4].std()), 1e-6))


def _blend(own: np.ndarray, shared: np.ndarray, similarity: float) -> np.ndarray:
    return similarity * shared + math.sqrt(max(0.0, 1 - similarity**2)) * own


def make_individual(
    rng: np.random.Generator, span_px: int, population: Population, similarity: float
) -> Individual:
    """Draw one individual: outline plus ventral pigmentation (white/black proportion, patches,
    spots, barnacle scars, rake marks), rendered once at `span_px` pixels per span."""
    frame = CanonicalFrame.for_span(span_px)
    outline, keypoints, trailing_edge, peduncle_bottom = _sample_outline(rng, similarity)
    spread = 1.0 - similarity

    alpha_u8 = np.zeros((frame.height, frame.width), np.uint8)
    pts = np.round(frame.to_pixels(outline) * 16).astype(np.int32)
    cv2.fillPoly(alpha_u8, [pts], 255, lineType=cv2.LINE_AA, shift=4)

    # The smooth pigmentation field is computed at half resolution (it has no fine detail).
    half = frame.halved()
    xs, ys = _canonical_grid(half)
    inside = cv2.resize(alpha_u8, (half.width, half.height), interpolation=cv2.INTER_AREA) >= 128
    dist_edge = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3) / np.float32(half.span_px)

    # Large-scale pattern: partly mirror-symmetric (as on real flukes), partly not.
    def pattern(grid_shape, shared):
        own = rng.standard_normal(grid_shape)
        sym_weight = rng.uniform(0.35, 0.8)
        mirrored = (own + own[:, ::-1]) / math.sqrt(2)
        mixed = sym_weight * mirrored + math.sqrt(1 - sym_weight**2) * rng.standard_normal(grid_shape)
        return _smooth_field(_blend(mixed, shared, similarity), half)

    field_ = pattern(COARSE_GRID, population.coarse) + np.float32(0.55) * pattern(MEDIUM_GRID, population.medium)
    fine = _smooth_field(_blend(rng.standard_normal(FINE_GRID), population.fine, similarity), half)
    field_ += np.float32(rng.uniform(0.15, 0.6)) * fine

    # Anatomical priors: dark margins along the edges (strongest on the trailing edge), an
    # optional dark median stripe under the notch, a darker peduncle.
    te_y = np.interp(xs, trailing_edge[:, 0], trailing_edge[:, 1]).astype(np.float32)
    below_te = np.maximum(ys[:, None] - te_y[None, :], 0)
    f32 = np.float32
    field_ -= f32(rng.uniform(0.3, 1.6)) * np.exp(dist_edge * f32(-1 / rng.uniform(0.008, 0.035)))
    field_ -= f32(rng.uniform(0.0, 2.0)) * np.exp(below_te * f32(-1 / rng.uniform(0.015, 0.08)))
    stripe = f32(rng.uniform(-0.5, 1.8)) * np.exp(-((xs / f32(rng.uniform(0.03, 0.12))) ** 2))
    peduncle = f32(rng.uniform(0.0, 2.0)) * np.clip((ys - f32(keypoints[5, 1] - 0.05)) / f32(0.12), 0, 1)
    field_ -= stripe[None, :] + peduncle[:, None]

    white_share = float(np.clip(0.5 + spread * (rng.uniform(0.03, 0.97) - 0.5), 0.02, 0.98))
    threshold = np.quantile(field_[inside], 1 - white_share)
    softness = rng.uniform(0.04, 0.3)
    whiteness = np.tanh((field_ - f32(threshold)) * f32(1 / (2 * softness))) * f32(0.5) + f32(0.5)
    whiteness = cv2.resize(whiteness, (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)

    # Personal marks, drawn in span units so they look the same at any resolution.
    mark_strength = 0.35 + 0.65 * spread
    px = frame.span_px
    spots = np.zeros_like(alpha_u8)
    for _ in range(rng.poisson(rng.uniform(0, 25) * spread)):
        centre = frame.to_pixels(np.array([rng.uniform(-0.48, 0.48), rng.uniform(-0.1, 0.4)]))
        axes = (max(1, int(px * rng.uniform(0.003, 0.018))), max(1, int(px * rng.uniform(0.003, 0.014))))
        cv2.ellipse(spots, (int(centre[0]), int(centre[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    whiteness *= 1 - np.float32(mark_strength / 255) * spots

    scars = np.zeros_like(alpha_u8)
    for _ in range(rng.poisson(rng.uniform(0, 14) * spread)):
        centre = frame.to_pixels(np.array([rng.uniform(-0.48, 0.48), rng.uniform(-0.1, 0.45)]))
        radius = max(1, int(px * rng.uniform(0.004, 0.014)))
        thickness = -1 if rng.random() < 0.4 else max(1, int(px * 0.003))
        cv2.circle(scars, (int(centre[0]), int(centre[1])), radius, 255, thickness, cv2.LINE_AA)
    for _ in range(rng.poisson(rng.uniform(0, 2.5) * spread)):
        # Rake marks: 2-4 parallel, slightly curved scratches.
        start = np.array([rng.uniform(-0.45, 0.45), rng.uniform(-0.05, 0.35)])
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.05, 0.25)
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        bend = rng.uniform(-0.03, 0.03)
        t = np.linspace(0, 1, 12)[:, None]
        for k in range(rng.integers(2, 5)):
            line = start + normal * k * rng.uniform(0.008, 0.016) + t * direction * length + normal * bend * np.sin(np.pi * t)
            cv2.polylines(scars, [np.round(frame.to_pixels(line) * 16).astype(np.int32)], False, 255, max(1, int(px * 0.003)), cv2.LINE_AA, shift=4)
    whiteness += (1 - whiteness) * np.float32(0.85 * mark_strength / 255) * scars

    # Colour = black + (white - black) * whiteness per channel: whites carry a faint yellow-brown
    # diatom film on some animals, blacks are blue-grey. Premultiplied by alpha.
    black, white = rng.uniform(0.05, 0.14), rng.uniform(0.78, 0.95)
    white_bgr = white * np.array([1.0 - rng.uniform(0, 0.12), 1.0 - rng.uniform(0, 0.04), 1.0])
    black_bgr = black * np.array([1.12, 1.04, 0.95])
    alpha = alpha_u8.astype(np.float32) * np.float32(1 / 255)
    bgra = np.empty((frame.height, frame.width, 4), np.float32)
    for c in range(3):
        bgra[..., c] = (f32(black_bgr[c]) + f32(white_bgr[c] - black_bgr[c]) * whiteness) * alpha
    bgra[..., 3] = alpha

    levels, frames = [bgra], [frame]
    while frames[-1].span_px > 48:
        levels.append(cv2.pyrDown(levels[-1]))
        frames.append(frames[-1].halved())
    return Individual(levels, frames, keypoints, outline, trailing_edge, peduncle_bottom, whiteness)


# --------------------------------------------------------------------------------------------
# Scene geometry
# --------------------------------------------------------------------------------------------


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
    roll = math.radians(float(np.clip(rng.normal(0, cfg["rotation_deg"] / 2), -cfg["rotation_deg"], cfg["rotation_deg"])))
    tilt = cfg["tilt_deg"]
    yaw = math.radians(rng.uniform(-tilt, tilt))
    pitch = math.radians(rng.uniform(-0.6 * tilt, 0.6 * tilt))
    distance = rng.uniform(2.5, 7.0)
    flex = cfg["flex"]
    curl, bend_l, bend_r = rng.uniform(-0.5, 1.0) * flex, rng.uniform(0, 1) * flex, rng.uniform(0, 1) * flex
    crop = rng.random() < cfg["crop_prob"]
    span_px = frac * width * (rng.uniform(1.0, 1.3) if crop else 1.0)

    visible_part = ind.keypoints[[0, 1, 2, 5, 6, 7]]
    for _ in range(3):  # shrink until the fluke's height fits the frame
        pose = Pose(_homography(span_px, (0, 0), roll, yaw, pitch, distance), span_px, curl, bend_l, bend_r,
                    math.degrees(roll), math.degrees(yaw), math.degrees(pitch))
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
    return Pose(_homography(span_px, centre, roll, yaw, pitch, distance), span_px, curl, bend_l, bend_r,
                math.degrees(roll), math.degrees(yaw), math.degrees(pitch))


def warp_individual(ind: Individual, pose: Pose, height: int, width: int):
    """Premultiplied BGRA of the posed fluke over the frame (and its ROI), via one cv2.remap."""
    corners = np.array([[-CANON_HALF_WIDTH, CANON_TOP], [CANON_HALF_WIDTH, CANON_TOP],
                        [CANON_HALF_WIDTH, CANON_BOTTOM], [-CANON_HALF_WIDTH, CANON_BOTTOM]])
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
    span_x, span_y = pose.unflex_xy((inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) * hw,
                                    (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) * hw)
    map_x = span_x * np.float32(frame.span_px) + np.float32(frame.origin_x)
    map_y = span_y * np.float32(frame.span_px) + np.float32(frame.origin_y)
    patch = cv2.remap(ind.levels[level], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return patch, (x0, y0, x1, y1)


# --------------------------------------------------------------------------------------------
# Backgrounds, water, spray, occluders
# --------------------------------------------------------------------------------------------


def _lerp_to(img: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """img * (1 - alpha) + colour * alpha for an HxW alpha; colour is a BGR triple or HxWx3.
    (Same-shape OpenCV/numpy ops: broadcasting over a trailing axis of 3 is ~10x slower.)"""
    a3 = cv2.merge([alpha, alpha, alpha])
    if np.ndim(colour) == 1:
        target = cv2.multiply(a3, (float(colour[0]), float(colour[1]), float(colour[2]), 0.0))
    else:
        target = a3 * colour
    return img - img * a3 + target


def _noise(rng, shape_hw, grid_hw, interpolation=cv2.INTER_CUBIC):
    small = rng.standard_normal(grid_hw).astype(np.float32)
    return cv2.resize(small, (shape_hw[1], shape_hw[0]), interpolation=interpolation)


def _periodic_noise(rng, height, width, sigma_x, sigma_y):
    """Tileable Gaussian-filtered noise (filtered in Fourier space, so it wraps seamlessly)."""
    spectrum = np.fft.rfft2(rng.standard_normal((height, width)))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    spectrum *= np.exp(-2 * math.pi**2 * ((fx * sigma_x) ** 2 + (fy * sigma_y) ** 2))
    tex = np.fft.irfft2(spectrum, s=(height, width)).astype(np.float32)
    return tex / max(float(tex.std()), 1e-6)


_WAVE_OCTAVES = ((10.0, 2.5, 0.35, 1.0), (5.0, 1.5, 0.12, 0.6), (2.5, 1.0, 0.04, 0.35))  # sigma_x, sigma_y, feature, weight
_WAVE_TEXTURE_SHAPE = (96, 256)
_WAVE_BANK_SIZE = 6


@lru_cache(maxsize=1)
def _wave_bank() -> tuple[tuple[np.ndarray, ...], ...]:
    """A fixed (seed-independent) bank of tileable wave textures per octave; each image picks
    one and shifts/scales it, which is as varied as fresh noise and much cheaper."""
    rng = np.random.default_rng(20190228)
    return tuple(
        tuple(_periodic_noise(rng, *_WAVE_TEXTURE_SHAPE, sx, sy) for _ in range(_WAVE_BANK_SIZE))
        for sx, sy, _, _ in _WAVE_OCTAVES
    )


def _sea_colour(rng):
    palettes = np.array([[0.36, 0.24, 0.10], [0.40, 0.30, 0.16], [0.30, 0.28, 0.18], [0.42, 0.38, 0.30],
                         [0.28, 0.26, 0.22], [0.45, 0.33, 0.20]], np.float32)  # BGR: blue, teal, grey, green-grey
    base = palettes[rng.integers(len(palettes))] * rng.uniform(0.6, 1.5)
    return np.clip(base + rng.normal(0, 0.03, 3), 0.03, 0.9).astype(np.float32)


def render_background(rng, height, width, horizon_y, cfg):
    """Sea with perspective waves, optional horizon with sky, clouds and coastline."""
    clutter = cfg["clutter"]
    ys = np.arange(height, dtype=np.float32)
    # Perspective ground plane: a row's distance grows as it nears the horizon.
    virtual_horizon = horizon_y if horizon_y is not None else -rng.uniform(0.3, 3.0) * height
    depth = np.maximum(ys - virtual_horizon, 1.0)
    bottom_depth = height - virtual_horizon
    texture_h, texture_w = _WAVE_TEXTURE_SHAPE
    xs = np.arange(width, dtype=np.float32)[None, :] - np.float32(width / 2)
    sea = np.zeros((height, width), np.float32)
    # Swell, waves, ripples: tileable noise laid on the sea plane, so features shrink and
    # flatten towards the horizon. `feature` is a wave's width at the bottom of the frame.
    for bank, (sigma_x, _, feature, weight) in zip(_wave_bank(), _WAVE_OCTAVES):
        tex = bank[rng.integers(len(bank))]
        texels_per_px = 2.5 * sigma_x / (feature * width * rng.uniform(0.7, 1.4))
        foreshortening = rng.uniform(1.0, 2.5)
        inv_depth = (1.0 / depth).astype(np.float32)
        map_x = xs * (inv_depth[:, None] * np.float32(texels_per_px * bottom_depth)) + np.float32(rng.uniform(0, texture_w))
        map_y = inv_depth * np.float32(texels_per_px * foreshortening * bottom_depth**2) + np.float32(rng.uniform(0, texture_h))
        map_y = np.broadcast_to((map_y % texture_h)[:, None], (height, width))
        sea += np.float32(weight) * cv2.remap(tex, map_x % np.float32(texture_w), np.ascontiguousarray(map_y),
                                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    if horizon_y is not None:  # far rows alias; distance flattens them anyway
        sea *= np.clip(depth / (0.15 * height), 0, 1)[:, None]
    f32 = np.float32
    chop = rng.uniform(0.05, 0.2) * (0.5 + clutter)
    colour = _sea_colour(rng)
    sky_colour = np.clip(np.array([0.85, 0.8, 0.72]) * rng.uniform(0.75, 1.1) + rng.normal(0, 0.04, 3), 0, 1).astype(f32)
    # Brightness: waves plus a gentle vertical gradient, then colour.
    lum = np.tanh(sea) * f32(chop) + (f32(1) + f32(rng.uniform(-0.15, 0.15)) * (ys / f32(height) - f32(0.5)))[:, None]
    if rng.random() < 0.4 * clutter + 0.1:  # sun glitter
        lum += np.clip((sea - f32(rng.uniform(1.6, 2.4))) * f32(2.0), 0, 1) * f32(rng.uniform(0.3, 0.9) / colour.mean())
    # Colour by one cv2.transform over channels [sea, haze, foam] -> BGR.
    far = np.zeros(height, f32)
    if horizon_y is not None:  # distance haze: the sea lightens and flattens towards the horizon
        far = (0.6 * np.exp(-(depth - 1) / (0.6 * height))).astype(f32)
    foam = np.zeros((height, width), f32)
    if rng.random() < 0.5 * clutter:
        # Whitecaps: horizontally stretched patches broken up by the wave texture.
        foam = np.clip((_noise(rng, (height, width), (28, 9)) - f32(rng.uniform(1.6, 2.4))) * f32(1.5), 0, 1)
        foam *= np.clip(sea - f32(0.3), 0, 1) * f32(0.6)
    keep = 1 - foam
    weights = cv2.merge([lum * (1 - far)[:, None] * keep, np.broadcast_to(far[:, None], (height, width)) * keep, foam])
    img = cv2.transform(weights, np.stack([colour, 0.8 * sky_colour, np.full(3, 0.85, f32)], axis=1))
    if horizon_y is not None and horizon_y > 0:
        sky_rows = int(min(height, math.ceil(horizon_y)))
        t = np.broadcast_to((ys[:sky_rows] / f32(max(horizon_y, 1)))[:, None], (sky_rows, width))
        top = np.clip(sky_colour * np.array([1.05, 0.92, 0.8]) * rng.uniform(0.75, 1.05), 0, 1).astype(f32)
        # Clouds: horizontally stretched soft blobs.
        clouds = np.clip(_noise(rng, (sky_rows, width), (5, 3)) * f32(0.5) + f32(rng.uniform(-0.6, 0.4)), 0, 1) * f32(0.6)
        weights = cv2.merge([(1 - t) * (1 - clouds), t * (1 - clouds), clouds])
        sky = cv2.transform(weights, np.stack([top, sky_colour, np.full(3, 0.92, f32)], axis=1))
        if rng.random() < 0.45:
            # Distant coastline or mountains sitting on the horizon.
            ridge = np.cumsum(rng.normal(0, 1, width // 4 + 2)).astype(f32)
            ridge = cv2.resize(ridge[None, :], (width, 1), interpolation=cv2.INTER_LINEAR)[0]
            ridge = (ridge - ridge.min()) / max(float(np.ptp(ridge)), 1e-6)
            ridge_h = horizon_y - ridge * rng.uniform(0.03, 0.25) * height - 1
            land = ys[:sky_rows, None] > ridge_h[None, :]
            land_colour = np.clip(np.array([0.25, 0.32, 0.3]) * rng.uniform(0.5, 1.6), 0, 1) * 0.6 + sky_colour * 0.4
            sky[land] = land_colour.astype(f32)
        img[:sky_rows] = sky
    return np.clip(img, 0, 1)


def water_line_function(y_at_centre, x_centre, slope, wave_amp, wave_len, phase):
    def water_y(x):
        return y_at_centre + slope * (x - x_centre) + wave_amp * np.sin(2 * math.pi * x / wave_len + phase)

    return water_y


def add_spray(rng, canvas_hw, pose: Pose, ind: Individual, strength: float):
    """Water cascading off the trailing edge and tips: streaks and a misty sheet (alpha layer)."""
    height, width = canvas_hw
    alpha = np.zeros((height, width), np.float32)
    edge = pose.project(ind.trailing_edge[::3])
    scale = max(pose.span_px / 256, 0.4)
    n_streaks = int(rng.integers(8, 60))
    idx = rng.integers(0, len(edge), n_streaks)
    starts = edge[idx] + rng.normal(0, 2 * scale, (n_streaks, 2))
    gravity = np.array([math.sin(math.radians(rng.normal(0, 8))), 1.0])
    lengths = rng.uniform(5, 60, n_streaks) * scale * rng.uniform(0.5, 1.5)
    layer = np.zeros((height, width), np.uint8)
    for start, length in zip(starts, lengths):
        end = start + gravity * length + rng.normal(0, 1.5 * scale, 2)
        cv2.line(layer, (int(start[0] * 16), int(start[1] * 16)), (int(end[0] * 16), int(end[1] * 16)),
                 int(rng.uniform(50, 200)), max(1, int(round(scale * rng.uniform(0.5, 1.5)))), cv2.LINE_AA, shift=4)
    alpha += cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 0.6 * scale + 0.3)
    if rng.random() < 0.6:
        mist = np.zeros((height, width), np.uint8)
        centre = edge[rng.integers(len(edge))]
        axes = (int(pose.span_px * rng.uniform(0.08, 0.3)), int(pose.span_px * rng.uniform(0.05, 0.2)))
        cv2.ellipse(mist, (int(centre[0]), int(centre[1] + axes[1] * 0.5)), axes, rng.uniform(-20, 20), 0, 360, 255, -1)
        mist_f = cv2.GaussianBlur(mist.astype(np.float32) / 255, (0, 0), max(axes) * 0.35 + 1)
        mist_f *= np.clip(_noise(rng, (height, width), (8, 12)) * 0.4 + 0.7, 0, 1)
        alpha = np.maximum(alpha, mist_f * rng.uniform(0.2, 0.6))
    return np.clip(alpha * strength, 0, 1)


def add_occluders(rng, height, width):
    """Opaque things in front of the fluke: boat parts, birds, another whale's back, a rope."""
    colour = np.zeros((height, width, 3), np.float32)
    layer = np.zeros((height, width), np.uint8)
    kind = ["boat", "birds", "whale_back", "rope"][rng.choice(4, p=[0.35, 0.25, 0.25, 0.15])]
    if kind == "boat":
        side = rng.integers(4)
        depth = rng.uniform(0.08, 0.35)
        ts = np.linspace(0, 1, 8)
        jag = rng.normal(0, 0.02, 8)
        if side == 0:  # bow/rail along the bottom
            pts = [(t * width, height * (1 - depth * (0.6 + 0.4 * math.sin(math.pi * t)) + j * height)) for t, j in zip(ts, jag)]
            pts += [(width, height), (0, height)]
        elif side == 1:  # from the left
            pts = [(width * depth * (0.5 + 0.5 * math.sin(math.pi * t)) + j * width, t * height) for t, j in zip(ts, jag)]
            pts += [(0, height), (0, 0)]
        elif side == 2:  # from the right
            pts = [(width * (1 - depth * (0.5 + 0.5 * math.sin(math.pi * t))) + j * width, t * height) for t, j in zip(ts, jag)]
            pts += [(width, height), (width, 0)]
        else:  # a corner wedge
            pts = [(0, height * (1 - depth * 1.5)), (width * depth * 1.5, height), (0, height)]
        cv2.fillPoly(layer, [np.array(pts, np.float32).round().astype(np.int32)], 255, cv2.LINE_AA)
        shade = rng.choice([0.92, 0.15, 0.55]) * rng.uniform(0.8, 1.1)
        tint = np.array([1.0, 1.0, 1.0]) if rng.random() < 0.6 else rng.uniform(0.3, 1.0, 3)
        colour[:] = np.clip(shade * tint, 0, 1)
    elif kind == "birds":
        for _ in range(rng.integers(1, 5)):
            c = np.array([rng.uniform(0, width), rng.uniform(0, height)])
            size = width * rng.uniform(0.02, 0.06)
            wing = np.array([[-1, -0.3], [-0.5, -0.5], [0, 0], [0.5, -0.5], [1, -0.3], [0.45, -0.25], [0, 0.15], [-0.45, -0.25]])
            ang = rng.uniform(-0.5, 0.5)
            rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
            cv2.fillPoly(layer, [np.round((c + wing @ rot.T * size) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        colour[:] = rng.choice([0.08, 0.85]) * rng.uniform(0.8, 1.1)
    elif kind == "whale_back":
        # Another whale surfacing near the boat: a long low hump with a small dorsal fin.
        c = np.array([rng.uniform(0, width), height * rng.uniform(0.8, 1.02)])
        length, rise = width * rng.uniform(0.2, 0.5), height * rng.uniform(0.05, 0.14)
        t = np.linspace(-1, 1, 40)
        hump = np.stack([c[0] + t * length / 2, c[1] - rise * (1 - t**2) ** 0.7], axis=1)
        fin_at = rng.uniform(-0.2, 0.4)
        fin_base = np.array([c[0] + fin_at * length / 2, c[1] - rise * (1 - fin_at**2) ** 0.7])
        fin = fin_base + np.array([[-0.06, 0.0], [0.02, -0.09], [0.06, 0.0]]) * length * rng.uniform(0.6, 1.1) * [1, 0.7]
        for poly in (hump, fin):
            cv2.fillPoly(layer, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        colour[:] = rng.uniform(0.06, 0.16)
    else:
        p0 = (int(rng.uniform(0, width)), 0)
        p1 = (int(rng.uniform(0, width)), height)
        cv2.line(layer, p0, p1, 255, max(1, int(width * rng.uniform(0.004, 0.012))), cv2.LINE_AA)
        colour[:] = rng.uniform(0.1, 0.8)
    return colour, layer.astype(np.float32) / 255, [kind]


def add_text(rng, colour, alpha, height, width):
    """A catalogue label burnt into the photo (happens on real survey images)."""
    text = rng.choice(["HW", "MN", "CRC", "IMG", "#"]) + "-" + str(int(rng.integers(10, 99999)))
    if rng.random() < 0.5:
        text += f" {int(rng.integers(1990, 2018))}"
    scale = width / 700 * rng.uniform(0.6, 1.4)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (int(rng.uniform(2, max(3, width - tw - 2))), int(rng.choice([th + 3, height - 4])))
    layer = np.zeros((height, width), np.uint8)
    thickness = max(1, int(round(scale * 1.5)))
    cv2.putText(layer, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    a = layer.astype(np.float32) / 255
    shade = rng.choice([0.95, 0.05, 0.9])
    tint = np.array([0.2, 0.9, 1.0]) if shade == 0.9 else np.ones(3)
    colour[:] = _lerp_to(colour, a, shade * tint)
    return np.maximum(alpha, a)


# --------------------------------------------------------------------------------------------
# One scene: background, fluke(s), water, spray, occluders
# --------------------------------------------------------------------------------------------


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 float32 BGR in [0, 1]
    mask: np.ndarray  # HxW bool, visible main fluke
    keypoints: np.ndarray  # (K, 2) pixels
    visible: np.ndarray  # (K,) bool
    attributes: dict


def _composite_fluke(canvas, patch, roi, light, cover):
    """Blend a premultiplied BGRA patch into canvas under an HxW `light` factor; `cover`
    (ROI-sized) hides parts (water). Returns the effective alpha."""
    x0, y0, x1, y1 = roi
    a = patch[..., 3] * cover
    gain = cover * light
    region = canvas[y0:y1, x0:x1]
    colour = cv2.cvtColor(patch, cv2.COLOR_BGRA2BGR) * cv2.merge([gain, gain, gain])
    region[:] = region - region * cv2.merge([a, a, a]) + colour
    return a


def render_scene(rng, height, width, ind: Individual, cfg, companion: Individual | None = None,
                 submerged=None, spray=None, occluded=None) -> Scene:
    """Render one sighting of `ind` into an HxW frame (optionally with a second whale behind)."""
    attributes = {}
    for _ in range(6):  # re-draw until the main fluke shows enough of itself
        pose = sample_pose(rng, width, height, ind, cfg)
        kp = pose.project(ind.keypoints)
        # The water line crosses the peduncle; submersion raises it over the blade.
        is_submerged = rng.random() < cfg["submersion_prob"] if submerged is None else submerged
        chord = ind.keypoints[5, 1] - ind.keypoints[1, 1]
        if is_submerged:
            level = ind.keypoints[5, 1] - rng.uniform(0.12, cfg["submersion_max"]) * chord
        else:
            level = ind.keypoints[5, 1] + rng.uniform(0.03, 0.25)
        anchor = pose.project(np.array([0.0, level]))
        slope = math.tan(math.radians(rng.normal(0, 2.5)))
        bottoms = pose.project(ind.peduncle_bottom)
        # The cut end of the peduncle must stay under water.
        limit = min(b[1] - slope * (b[0] - anchor[0]) for b in bottoms) - 2
        y_line = min(anchor[1], limit)
        water_y = water_line_function(y_line, anchor[0], slope, rng.uniform(0.2, 1.5) * pose.span_px / 256,
                                      rng.uniform(0.1, 0.4) * width, rng.uniform(0, 2 * math.pi))
        patch, roi = warp_individual(ind, pose, height, width)
        if patch is None:
            continue
        x0, y0, x1, y1 = roi
        line_roi = water_y(np.arange(x0, x1, dtype=np.float32))
        above = np.clip(line_roi[None, :] - np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5, 0, 1)
        visible_alpha = patch[..., 3] * above
        if (visible_alpha >= 0.5).sum() >= max(40, 0.002 * height * width):
            break
    attributes.update(submerged=bool(is_submerged), roll_deg=round(pose.roll_deg, 2), yaw_deg=round(pose.yaw_deg, 2),
                      pitch_deg=round(pose.pitch_deg, 2), span_px=round(pose.span_px, 1))

    # Horizon: somewhere above the water line (often out of frame).
    top_of_water = float(min(water_y(np.array([0.0, width / 2, width])).min(), y_line))
    horizon_y = None
    if rng.random() < cfg["horizon_prob"] and top_of_water > 0.15 * height:
        horizon_y = rng.uniform(0.05, 0.75) * min(top_of_water, height)
    canvas = render_background(rng, height, width, horizon_y, cfg)

    if companion is not None:
        c_pose = sample_pose(rng, width, height, companion, cfg, span_fraction=rng.uniform(0.2, 0.45))
        c_patch, c_roi = warp_individual(companion, c_pose, height, width)
        if c_patch is not None:
            c_level = c_pose.project(np.array([0.0, companion.keypoints[5, 1] + 0.08]))
            cx0, cy0, cx1, cy1 = c_roi
            c_above = np.clip(c_level[1] - np.arange(cy0, cy1, dtype=np.float32)[:, None] + 0.5, 0, 1)
            c_above = np.ascontiguousarray(np.broadcast_to(c_above, (cy1 - cy0, cx1 - cx0)))
            c_light = np.full(c_above.shape, rng.uniform(0.6, 1.1), np.float32)
            _composite_fluke(canvas, c_patch, c_roi, c_light, c_above)
            attributes["companion"] = True

    # Light on the fluke: exposure relative to the scene (backlit flukes are dark), a gradient
    # across the blade, and a slowly varying sheen (`appearance_jitter`).
    rh, rw = y1 - y0, x1 - x0
    backlit = rng.random() < 0.15 * cfg["lighting"] / 0.5
    exposure = rng.uniform(0.35, 0.6) if backlit else math.exp(rng.normal(0, 0.2 * cfg["lighting"]))
    direction = rng.uniform(0, 2 * math.pi)
    gx = (np.arange(rw, dtype=np.float32) / max(rw, 1) - 0.5)[None, :]
    gy = (np.arange(rh, dtype=np.float32) / max(rh, 1) - 0.5)[:, None]
    light = np.float32(exposure) * (1 + np.float32(rng.uniform(0, 0.5) * cfg["lighting"]) * (
        np.float32(math.cos(direction)) * gx + np.float32(math.sin(direction)) * gy))
    jitter = cfg["appearance_jitter"]
    if jitter > 0:
        light = light * (1 + 0.25 * jitter * _noise(rng, (rh, rw), (4, 6)))
        sheen = np.clip(_noise(rng, (rh, rw), (10, 16)) - rng.uniform(1.2, 2.2), 0, None) * 0.5 * jitter
        light = light + sheen
    fluke_alpha = _composite_fluke(canvas, patch, roi, light.astype(np.float32), above)

    # Foam where the peduncle breaks the surface, then the water in front.
    foam_rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    near_line = np.exp(-((foam_rows - line_roi[None, :]) / (0.012 * pose.span_px + 1)) ** 2)
    entry = np.clip(patch[..., 3] * 3, 0, 1)
    entry = cv2.GaussianBlur(entry, (0, 0), 0.03 * pose.span_px + 1)
    foam = near_line * entry * np.clip(0.6 + 0.5 * _noise(rng, (rh, rw), (3, 12)), 0, 1) * np.float32(rng.uniform(0.3, 0.9))
    canvas[y0:y1, x0:x1] = _lerp_to(canvas[y0:y1, x0:x1], foam.astype(np.float32), (0.9, 0.9, 0.9))

    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = fluke_alpha >= 0.5

    # Dense spray and opaque occluders hide fluke pixels from the mask (and keypoints).
    hidden = np.zeros((height, width), bool)
    has_spray = rng.random() < cfg["spray_prob"] if spray is None else spray
    if has_spray:
        spray_alpha = add_spray(rng, (height, width), pose, ind, rng.uniform(0.5, 1.0))
        canvas = _lerp_to(canvas, spray_alpha, (0.92, 0.92, 0.92))
        hidden |= spray_alpha > 0.75
    attributes["spray"] = bool(has_spray)

    occ_kinds = []
    has_occluder = rng.random() < cfg["occluder_prob"] if occluded is None else occluded
    has_text = rng.random() < cfg["text_prob"]
    if has_occluder or has_text:
        occ_colour = np.zeros((height, width, 3), np.float32)
        occ_alpha = np.zeros((height, width), np.float32)
        if has_occluder:
            occ_colour, occ_alpha, occ_kinds = add_occluders(rng, height, width)
            # Occluders may hide a part of the fluke, never most of it.
            if (mask & (occ_alpha < 0.5)).sum() < 0.5 * mask.sum():
                occ_alpha[:] = 0
                occ_kinds = []
        if has_text:
            occ_alpha = add_text(rng, occ_colour, occ_alpha, height, width)
            occ_kinds.append("text")
        canvas = _lerp_to(canvas, occ_alpha, occ_colour)
        hidden |= occ_alpha >= 0.5
    attributes["occluders"] = "+".join(occ_kinds)
    if (mask & ~hidden).sum() >= 0.3 * mask.sum():
        mask &= ~hidden
    else:  # a veil of spray over most of the blade: keep the blade in the mask
        hidden[:] = False

    inside = (kp[:, 0] >= 0) & (kp[:, 0] < width) & (kp[:, 1] >= 0) & (kp[:, 1] < height)
    dry = kp[:, 1] < water_y(kp[:, 0])
    xi = np.clip(np.floor(kp[:, 0]).astype(int), 0, width - 1)
    yi = np.clip(np.floor(kp[:, 1]).astype(int), 0, height - 1)
    visible = inside & dry & ~hidden[yi, xi]
    return Scene(canvas.astype(np.float32), mask, kp, visible, attributes)


# --------------------------------------------------------------------------------------------
# Whole image: size, layout (collage / companion), camera effects
# --------------------------------------------------------------------------------------------


def sample_image_size(rng, image_width, extreme_ratio: bool) -> tuple[int, int]:
    """(height, width) following Kaggle 2019's size mix, scaled so 1050 px -> image_width."""
    scale = image_width / KAGGLE_WIDTH
    if extreme_ratio:
        w = rng.uniform(1800, 2600)
        h = w / rng.uniform(5.0, 7.0)  # like the 2528x382 panorama crops
    else:
        r = rng.random()
        cumulative = 0.0
        w = h = None
        for (kw, kh), share in KAGGLE_SIZES:
            cumulative += share
            if r < cumulative:
                w, h = kw, kh
                break
        if w is None:
            kind = rng.random()
            if kind < 0.55:
                w = rng.normal(1050, 45)
            elif kind < 0.85:
                w = rng.uniform(450, 1000)
            else:
                w = rng.uniform(1100, 1900)
            h = w * rng.uniform(0.19, 0.86)
    return max(16, int(round(h * scale))), max(16, int(round(w * scale)))


@lru_cache(maxsize=1)
def _grain_bank() -> np.ndarray:
    """Fixed unit sensor grain (luminance + weaker chroma) that images crop at random offsets."""
    rng = np.random.default_rng(1050700)
    shape = (600, 1100)
    return (rng.standard_normal((*shape, 1), dtype=np.float32) * 0.6
            + rng.standard_normal((*shape, 3), dtype=np.float32) * 0.5)


def _grain(rng, height, width) -> np.ndarray:
    bank = _grain_bank()
    if height > bank.shape[0] or width > bank.shape[1]:
        return (rng.standard_normal((height, width, 1), dtype=np.float32) * 0.6
                + rng.standard_normal((height, width, 3), dtype=np.float32) * 0.5)
    y, x = rng.integers(0, bank.shape[0] - height + 1), rng.integers(0, bank.shape[1] - width + 1)
    return bank[y:y + height, x:x + width]


def camera_effects(rng, image, cfg, grayscale: bool):
    """Exposure, contrast, white balance, haze, vignetting, gamma, blur, sensor noise, grayscale.
    Returns uint8 (HxW for grayscale, HxWx3 otherwise) and a dict of what was applied."""
    height, width = image.shape[:2]
    lighting = cfg["lighting"]
    # White balance, haze, exposure and contrast are per-channel affine maps: fuse them.
    gain = np.exp(rng.normal(0, 0.12, 3) * lighting)
    offset = np.zeros(3)
    if rng.random() < 0.3 * lighting:
        haze = rng.uniform(0.05, 0.35)
        gain, offset = gain * (1 - haze), offset + haze * rng.uniform(0.6, 0.9)
    mean = float((np.array(cv2.mean(image)[:3]) * gain + offset).mean())
    contrast = math.exp(rng.normal(0, 0.25 * lighting))
    brightness = math.exp(rng.normal(0, 0.25 * lighting))
    scale = 255 * gain * contrast
    shift = 255 * ((offset - mean) * contrast + mean * brightness) + 0.5
    img = cv2.transform(image, np.column_stack([np.diag(scale), shift]).astype(np.float32))
    if rng.random() < 0.25:
        yy, xx = np.ogrid[:height, :width]
        r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
        vignette = (1 - rng.uniform(0.1, 0.4) * r2 / 2).astype(np.float32)
        img *= cv2.merge([vignette, vignette, vignette])
    out = np.clip(img, 0, 255).astype(np.uint8)
    gamma = math.exp(rng.normal(0, 0.15 * lighting))
    out = cv2.LUT(out, np.round(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8))
    applied = {}
    blur = 0.0
    if rng.random() < cfg["blur_prob"]:
        blur = rng.uniform(0.3, 1.0) * cfg["blur_max"] * width / 256
        if rng.random() < 0.3:  # motion blur along a random direction
            length = max(3, int(round(blur * 3)) | 1)
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2, :] = 1 / length
            rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (length, length))
            out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6))
        else:
            out = cv2.GaussianBlur(out, (0, 0), blur)
    applied["blur"] = round(blur, 2)
    noise = rng.uniform(0, cfg["noise_max"])
    if noise > 0.5:  # luminance noise plus weaker chroma noise
        out = np.clip(out + _grain(rng, height, width) * np.float32(noise), 0, 255).astype(np.uint8)
    applied["noise"] = round(noise, 2)
    if grayscale:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    return out, applied


@dataclass
class RenderedImage:
    jpeg: bytes
    mask_png: bytes
    keypoints: np.ndarray
    visible: np.ndarray
    box: tuple[int, int, int, int]
    attributes: dict


def render_image(rng, ind: Individual, cfg, grayscale: bool, two_flukes: bool, extreme_ratio: bool,
                 make_companion) -> RenderedImage:
    """One whole photo of `ind`: size, layout, scene(s), camera, JPEG. `make_companion(rng)` draws
    an unrelated animal for the two-fluke pathology."""
    height, width = sample_image_size(rng, cfg["image_width"], extreme_ratio)
    attributes = {"width": width, "height": height, "grayscale": grayscale, "extreme_ratio": extreme_ratio}
    layout = "single"
    if two_flukes:
        layout = "collage" if rng.random() < 0.4 else "companion"
    attributes["two_flukes"] = layout if two_flukes else ""
    if layout == "collage":
        # Two photos of the same animal pasted side by side; the main one is the wider panel.
        main_w = int(width * rng.uniform(0.5, 0.62))
        gap = max(1, width // 150)
        other_w = width - main_w - gap
        main_left = rng.random() < 0.5
        main = render_scene(rng, height, main_w, ind, cfg)
        other = render_scene(rng, height, other_w, ind, cfg)
        image = np.full((height, width, 3), np.float32(rng.choice([1.0, 0.0])), np.float32)
        mask = np.zeros((height, width), bool)
        offset = 0 if main_left else other_w + gap
        other_offset = main_w + gap if main_left else 0
        image[:, offset:offset + main_w] = main.image
        image[:, other_offset:other_offset + other_w] = other.image
        mask[:, offset:offset + main_w] = main.mask
        keypoints = main.keypoints + (offset, 0)
        scene = main
    else:
        companion = make_companion(rng) if layout == "companion" else None
        scene = render_scene(rng, height, width, ind, cfg, companion=companion)
        image, mask, keypoints = scene.image, scene.mask, scene.keypoints
    attributes.update(scene.attributes)
    pixels, applied = camera_effects(rng, image, cfg, grayscale)
    attributes.update(applied)
    quality = int(rng.integers(cfg["jpeg_quality"][0], cfg["jpeg_quality"][1] + 1))
    attributes["jpeg_quality"] = quality
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    mask_u8 = mask.astype(np.uint8) * 255
    ok2, png = cv2.imencode(".png", mask_u8, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not (ok and ok2):
        raise RuntimeError("OpenCV failed to encode a demo image")
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return RenderedImage(jpeg.tobytes(), png.tobytes(), keypoints, scene.visible, box, attributes)
