"""One whole demo photo (`render_image` -> `RenderedImage`: JPEG, mask PNG, keypoints, box and
rendering attributes): the frame size (Kaggle 2019's size mix, rare panoramas), the layout (one
fluke, another whale behind, or a two-photo collage of the same animal), the scene(s) and the
camera effects (exposure, contrast, white balance, haze, vignetting, gamma, blur, sensor noise and
grain, grayscale), then the JPEG quality. All randomness comes from the numpy Generator passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from flukeline.data.demo.individual import KAGGLE_SIZES, KAGGLE_WIDTH, Individual
from flukeline.data.demo.scene import render_scene


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
    return (
        rng.standard_normal((*shape, 1), dtype=np.float32) * 0.6
        + rng.standard_normal((*shape, 3), dtype=np.float32) * 0.5
    )


def _grain(rng, height, width) -> np.ndarray:
    bank = _grain_bank()
    if height > bank.shape[0] or width > bank.shape[1]:
        return (
            rng.standard_normal((height, width, 1), dtype=np.float32) * 0.6
            + rng.standard_normal((height, width, 3), dtype=np.float32) * 0.5
        )
    y, x = rng.integers(0, bank.shape[0] - height + 1), rng.integers(0, bank.shape[1] - width + 1)
    return bank[y : y + height, x : x + width]


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


def _resized_up(pixels, mask, keypoints, width: int, height: int):
    """A photo drawn small at its full size: pixels (bilinear), mask (nearest) and keypoints
    (pixel centres mapped)."""
    fx, fy = width / pixels.shape[1], height / pixels.shape[0]
    pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    keypoints = (np.asarray(keypoints, np.float64) + 0.5) * (fx, fy) - 0.5
    return pixels, mask, keypoints


@dataclass
class RenderedImage:
    jpeg: bytes
    mask_png: bytes
    keypoints: np.ndarray
    visible: np.ndarray
    box: tuple[int, int, int, int]
    attributes: dict


def render_image(
    rng, ind: Individual, cfg, grayscale: bool, two_flukes: bool, extreme_ratio: bool, make_companion
) -> RenderedImage:
    """One whole photo of `ind`: size, layout, scene(s), camera, JPEG. `make_companion(rng)` draws
    an unrelated animal for the two-fluke pathology."""
    full_height, full_width = sample_image_size(rng, cfg["image_width"], extreme_ratio)
    attributes = {"width": full_width, "height": full_height, "grayscale": grayscale, "extreme_ratio": extreme_ratio}
    # render_scale < 1: the scene is drawn smaller and resized up to the photo's size below.
    scale = float(cfg.get("render_scale", 1.0))
    height, width = max(8, round(full_height * scale)), max(8, round(full_width * scale))
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
        image[:, offset : offset + main_w] = main.image
        image[:, other_offset : other_offset + other_w] = other.image
        mask[:, offset : offset + main_w] = main.mask
        keypoints = main.keypoints + (offset, 0)
        scene = main
    else:
        companion = make_companion(rng) if layout == "companion" else None
        scene = render_scene(rng, height, width, ind, cfg, companion=companion)
        image, mask, keypoints = scene.image, scene.mask, scene.keypoints
    attributes.update(scene.attributes)
    pixels, applied = camera_effects(rng, image, cfg, grayscale)
    attributes.update(applied)
    if (height, width) != (full_height, full_width):
        pixels, mask, keypoints = _resized_up(pixels, mask, keypoints, full_width, full_height)
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
