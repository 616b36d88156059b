"""The sea of a demo sighting: colour, a bank of wave textures, the background with its horizon
and sky, and the water line the fluke emerges from (the demo generator's scene.py draws the rest)."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np


def lerp_to(img: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """img * (1 - alpha) + colour * alpha for an HxW alpha; colour is a BGR triple or HxWx3.
    (Same-shape OpenCV/numpy ops: broadcasting over a trailing axis of 3 is ~10x slower.)"""
    a3 = cv2.merge([alpha, alpha, alpha])
    if np.ndim(colour) == 1:
        target = cv2.multiply(a3, (float(colour[0]), float(colour[1]), float(colour[2]), 0.0))
    else:
        target = a3 * colour
    return img - img * a3 + target


def smooth_noise(rng, shape_hw, grid_hw, interpolation=cv2.INTER_CUBIC):
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


_WAVE_OCTAVES = (
    (10.0, 2.5, 0.35, 1.0),
    (5.0, 1.5, 0.12, 0.6),
    (2.5, 1.0, 0.04, 0.35),
)  # sigma_x, sigma_y, feature, weight

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
    palettes = np.array(
        [
            [0.36, 0.24, 0.10],
            [0.40, 0.30, 0.16],
            [0.30, 0.28, 0.18],
            [0.42, 0.38, 0.30],
            [0.28, 0.26, 0.22],
            [0.45, 0.33, 0.20],
        ],
        np.float32,
    )  # BGR: blue, teal, grey, green-grey
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
        map_x = xs * (inv_depth[:, None] * np.float32(texels_per_px * bottom_depth)) + np.float32(
            rng.uniform(0, texture_w)
        )
        map_y = inv_depth * np.float32(texels_per_px * foreshortening * bottom_depth**2) + np.float32(
            rng.uniform(0, texture_h)
        )
        map_y = np.broadcast_to((map_y % texture_h)[:, None], (height, width))
        sea += np.float32(weight) * cv2.remap(
            tex,
            map_x % np.float32(texture_w),
            np.ascontiguousarray(map_y),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_WRAP,
        )
    if horizon_y is not None:  # far rows alias; distance flattens them anyway
        sea *= np.clip(depth / (0.15 * height), 0, 1)[:, None]
    f32 = np.float32
    chop = rng.uniform(0.05, 0.2) * (0.5 + clutter)
    colour = _sea_colour(rng)
    sky_colour = np.clip(np.array([0.85, 0.8, 0.72]) * rng.uniform(0.75, 1.1) + rng.normal(0, 0.04, 3), 0, 1).astype(
        f32
    )
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
        foam = np.clip((smooth_noise(rng, (height, width), (28, 9)) - f32(rng.uniform(1.6, 2.4))) * f32(1.5), 0, 1)
        foam *= np.clip(sea - f32(0.3), 0, 1) * f32(0.6)
    keep = 1 - foam
    weights = cv2.merge([lum * (1 - far)[:, None] * keep, np.broadcast_to(far[:, None], (height, width)) * keep, foam])
    img = cv2.transform(weights, np.stack([colour, 0.8 * sky_colour, np.full(3, 0.85, f32)], axis=1))
    if horizon_y is not None and horizon_y > 0:
        sky_rows = int(min(height, math.ceil(horizon_y)))
        t = np.broadcast_to((ys[:sky_rows] / f32(max(horizon_y, 1)))[:, None], (sky_rows, width))
        top = np.clip(sky_colour * np.array([1.05, 0.92, 0.8]) * rng.uniform(0.75, 1.05), 0, 1).astype(f32)
        # Clouds: horizontally stretched soft blobs.
        clouds = np.clip(
            smooth_noise(rng, (sky_rows, width), (5, 3)) * f32(0.5) + f32(rng.uniform(-0.6, 0.4)), 0, 1
        ) * f32(0.6)
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
