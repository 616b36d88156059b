"""One demo sighting's scene (`render_scene` -> `Scene`: image, visible fluke mask, keypoints):
the sea (perspective waves, optional horizon with sky, clouds and coastline), the water line the
fluke emerges from, spray off the trailing edge, occluders (boat parts, birds, another whale's
back, a rope) and burnt-in catalogue labels, with the posed fluke composited in (optionally a
second whale behind it). Everything is vectorised numpy/OpenCV; all randomness comes from the
numpy Generator passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from flukeline.data.demo.individual import Individual
from flukeline.data.demo.pose import Pose, sample_pose, warp_individual
from flukeline.data.demo.water import lerp_to, render_background, smooth_noise, water_line_function


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
        cv2.line(
            layer,
            (int(start[0] * 16), int(start[1] * 16)),
            (int(end[0] * 16), int(end[1] * 16)),
            int(rng.uniform(50, 200)),
            max(1, int(round(scale * rng.uniform(0.5, 1.5)))),
            cv2.LINE_AA,
            shift=4,
        )
    alpha += cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 0.6 * scale + 0.3)
    if rng.random() < 0.6:
        mist = np.zeros((height, width), np.uint8)
        centre = edge[rng.integers(len(edge))]
        axes = (int(pose.span_px * rng.uniform(0.08, 0.3)), int(pose.span_px * rng.uniform(0.05, 0.2)))
        cv2.ellipse(mist, (int(centre[0]), int(centre[1] + axes[1] * 0.5)), axes, rng.uniform(-20, 20), 0, 360, 255, -1)
        mist_f = cv2.GaussianBlur(mist.astype(np.float32) / 255, (0, 0), max(axes) * 0.35 + 1)
        mist_f *= np.clip(smooth_noise(rng, (height, width), (8, 12)) * 0.4 + 0.7, 0, 1)
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
            pts = [
                (t * width, height * (1 - depth * (0.6 + 0.4 * math.sin(math.pi * t)) + j * height))
                for t, j in zip(ts, jag)
            ]
            pts += [(width, height), (0, height)]
        elif side == 1:  # from the left
            pts = [
                (width * depth * (0.5 + 0.5 * math.sin(math.pi * t)) + j * width, t * height) for t, j in zip(ts, jag)
            ]
            pts += [(0, height), (0, 0)]
        elif side == 2:  # from the right
            pts = [
                (width * (1 - depth * (0.5 + 0.5 * math.sin(math.pi * t))) + j * width, t * height)
                for t, j in zip(ts, jag)
            ]
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
            wing = np.array(
                [[-1, -0.3], [-0.5, -0.5], [0, 0], [0.5, -0.5], [1, -0.3], [0.45, -0.25], [0, 0.15], [-0.45, -0.25]]
            )
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
        fin = fin_base + np.array([[-0.06, 0.0], [0.02, -0.09], [0.06, 0.0]]) * length * rng.uniform(0.6, 1.1) * [
            1,
            0.7,
        ]
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
    colour[:] = lerp_to(colour, a, shade * tint)
    return np.maximum(alpha, a)


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


def render_scene(
    rng,
    height,
    width,
    ind: Individual,
    cfg,
    companion: Individual | None = None,
    submerged=None,
    spray=None,
    occluded=None,
) -> Scene:
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
        water_y = water_line_function(
            y_line,
            anchor[0],
            slope,
            rng.uniform(0.2, 1.5) * pose.span_px / 256,
            rng.uniform(0.1, 0.4) * width,
            rng.uniform(0, 2 * math.pi),
        )
        patch, roi = warp_individual(ind, pose, height, width)
        if patch is None:
            continue
        x0, y0, x1, y1 = roi
        line_roi = water_y(np.arange(x0, x1, dtype=np.float32))
        above = np.clip(line_roi[None, :] - np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5, 0, 1)
        visible_alpha = patch[..., 3] * above
        if (visible_alpha >= 0.5).sum() >= max(40, 0.002 * height * width):
            break
    attributes.update(
        submerged=bool(is_submerged),
        roll_deg=round(pose.roll_deg, 2),
        yaw_deg=round(pose.yaw_deg, 2),
        pitch_deg=round(pose.pitch_deg, 2),
        span_px=round(pose.span_px, 1),
    )

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
    light = np.float32(exposure) * (
        1
        + np.float32(rng.uniform(0, 0.5) * cfg["lighting"])
        * (np.float32(math.cos(direction)) * gx + np.float32(math.sin(direction)) * gy)
    )
    jitter = cfg["appearance_jitter"]
    if jitter > 0:
        light = light * (1 + 0.25 * jitter * smooth_noise(rng, (rh, rw), (4, 6)))
        sheen = np.clip(smooth_noise(rng, (rh, rw), (10, 16)) - rng.uniform(1.2, 2.2), 0, None) * 0.5 * jitter
        light = light + sheen
    fluke_alpha = _composite_fluke(canvas, patch, roi, light.astype(np.float32), above)

    # Foam where the peduncle breaks the surface, then the water in front.
    foam_rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    near_line = np.exp(-(((foam_rows - line_roi[None, :]) / (0.012 * pose.span_px + 1)) ** 2))
    entry = np.clip(patch[..., 3] * 3, 0, 1)
    entry = cv2.GaussianBlur(entry, (0, 0), 0.03 * pose.span_px + 1)
    foam = (
        near_line
        * entry
        * np.clip(0.6 + 0.5 * smooth_noise(rng, (rh, rw), (3, 12)), 0, 1)
        * np.float32(rng.uniform(0.3, 0.9))
    )
    canvas[y0:y1, x0:x1] = lerp_to(canvas[y0:y1, x0:x1], foam.astype(np.float32), (0.9, 0.9, 0.9))

    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = fluke_alpha >= 0.5

    # Dense spray and opaque occluders hide fluke pixels from the mask (and keypoints).
    hidden = np.zeros((height, width), bool)
    has_spray = rng.random() < cfg["spray_prob"] if spray is None else spray
    if has_spray:
        spray_alpha = add_spray(rng, (height, width), pose, ind, rng.uniform(0.5, 1.0))
        canvas = lerp_to(canvas, spray_alpha, (0.92, 0.92, 0.92))
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
        canvas = lerp_to(canvas, occ_alpha, occ_colour)
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
