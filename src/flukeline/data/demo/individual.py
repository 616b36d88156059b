"""One demo individual, drawn once and rendered in the canonical frame (span-normalised units:
tips at x = ±0.5, notch at the origin, y down) as a premultiplied BGRA texture with a small pyramid.

Identity lives in the fluke outline's trailing edge (serration, nicks, bites, tip shapes; each half
its own, so a mirrored fluke is a different animal) and in the ventral pigmentation (white/black
proportion, patches, spots, barnacle scars, rake marks). `Population` is what all individuals of
one dataset share; `identity_similarity` pulls everybody towards it. Also the keypoint names, the
canonical box and Kaggle 2019's image sizes. All randomness comes from the numpy Generator passed
in.
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


@dataclass(frozen=True)
class CanonicalFrame:
    """Pixel raster of the canonical box: pixel = origin + span_px * (x, y)."""

    span_px: float
    width: int
    height: int
    origin_x: float
    origin_y: float

    @staticmethod
    def for_span(span_px: int) -> CanonicalFrame:
        half = math.ceil(CANON_HALF_WIDTH * span_px)
        width = 2 * half + 1  # odd, so that flipping columns mirrors exactly about x = 0
        height = math.ceil((CANON_BOTTOM - CANON_TOP) * span_px)
        return CanonicalFrame(float(span_px), width, height, float(half), -CANON_TOP * span_px)

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        return points * self.span_px + (self.origin_x, self.origin_y)

    def halved(self) -> CanonicalFrame:
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


def make_individual(rng: np.random.Generator, span_px: int, population: Population, similarity: float) -> Individual:
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
            line = (
                start
                + normal * k * rng.uniform(0.008, 0.016)
                + t * direction * length
                + normal * bend * np.sin(np.pi * t)
            )
            cv2.polylines(
                scars,
                [np.round(frame.to_pixels(line) * 16).astype(np.int32)],
                False,
                255,
                max(1, int(px * 0.003)),
                cv2.LINE_AA,
                shift=4,
            )
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
