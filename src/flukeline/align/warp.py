"""The align stage's one warp: `warp` runs cv2.warpAffine on only the part of the photo the crop
samples, reduced first with INTER_AREA when the warp shrinks by more than 2x so that fine
trailing-edge detail does not alias; `warp_box_crop` letterboxes a box crop with its padding
(align.padding); `write_png` writes crops with OpenCV's fastest PNG settings."""

from __future__ import annotations

import math

import cv2
import numpy as np

from flukeline.align.geometry import BoxCrop
from flukeline.align.settings import check_padding


def warp(image: np.ndarray, matrix: np.ndarray, out_size, border=cv2.BORDER_REPLICATE, value=0) -> np.ndarray:
    """cv2.warpAffine of `image` by `matrix` (source pixels -> output pixels) into out_size.

    Only the part of the image the output samples is touched, and when the warp shrinks by more
    than 2x that part is first reduced with INTER_AREA, so the bilinear warp does not alias fine
    trailing-edge detail. Both steps leave BORDER_REPLICATE/CONSTANT/REFLECT_101 semantics unchanged.
    """
    (a, b, c), (d, e, f) = np.asarray(matrix, np.float64)[:2].tolist()
    height, width = image.shape[:2]
    out_w, out_h = int(out_size[0]), int(out_size[1])
    det = a * e - b * d
    if det == 0 or not math.isfinite(det):
        raise ValueError(f"singular crop matrix {matrix}")
    # Source footprint of the output: its corners mapped back through the inverse.
    xs, ys = [], []
    for u in (-0.5, out_w - 0.5):
        for v in (-0.5, out_h - 0.5):
            xs.append((e * (u - c) - b * (v - f)) / det)
            ys.append((-d * (u - c) + a * (v - f)) / det)
    # Smallest singular value of the 2x2 part: output pixels per source pixel along the most
    # shrunk direction.
    q = a * a + b * b + d * d + e * e
    shrink = math.sqrt(max(0.0, (q - math.sqrt(max(0.0, q * q - 4 * det * det))) / 2))
    reduce = min(1.0, 2.0 * shrink)
    pad = int(math.ceil(2.0 / max(reduce, 1e-6))) + 2
    # Clamping keeps at least one pixel: replicating the border of the clamped window is the same
    # as replicating the image's, and constant borders are outside the image either way.
    x0, x1 = _source_span(math.floor(min(xs)) - pad, math.ceil(max(xs)) + pad, width, border)
    y0, y1 = _source_span(math.floor(min(ys)) - pad, math.ceil(max(ys)) + pad, height, border)
    source = image[y0:y1, x0:x1]
    c, f = c + a * x0 + b * y0, f + d * x0 + e * y0
    if reduce < 0.999:
        small_w = max(1, round(source.shape[1] * reduce))
        small_h = max(1, round(source.shape[0] * reduce))
        rx, ry = small_w / source.shape[1], small_h / source.shape[0]
        source = cv2.resize(source, (small_w, small_h), interpolation=cv2.INTER_AREA)
        # resize maps pixel centres x -> (x + 0.5) * r - 0.5; undo that before the warp.
        ox, oy = 0.5 / rx - 0.5, 0.5 / ry - 0.5
        c, f = c + a * ox + b * oy, f + d * ox + e * oy
        a, d, b, e = a / rx, d / rx, b / ry, e / ry
    warp_matrix = np.array([[a, b, c], [d, e, f]], np.float64)
    return cv2.warpAffine(
        source, warp_matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=value
    )


def _source_span(lo: int, hi: int, n: int, border) -> tuple[int, int]:
    """The rows (or columns) lo..hi the warp samples, clamped to the image: [start, stop).

    A reflected border samples the mirror images of what lies outside, so the window also takes
    them in (the whole axis when the overhang wraps more than once)."""
    if border == cv2.BORDER_REFLECT_101:
        lo, hi = min(lo, 2 * (n - 1) - hi), max(hi, -lo)
    return min(max(lo, 0), n - 1), min(max(hi, 0), n - 1) + 1


def _blank_beyond_photo(crop: np.ndarray, matrix: np.ndarray, photo_shape, value) -> np.ndarray:
    """`crop` with every pixel whose centre lies beyond the photo's edges set to `value`. A box
    crop's matrix has no rotation, so that is whole columns and rows."""
    height, width = photo_shape[:2]
    xs = (np.arange(crop.shape[1]) - matrix[0, 2]) / matrix[0, 0]
    ys = (np.arange(crop.shape[0]) - matrix[1, 2]) / matrix[1, 1]
    crop[:, (xs < -0.5 - 1e-6) | (xs > width - 0.5 + 1e-6)] = value
    crop[(ys < -0.5 - 1e-6) | (ys > height - 0.5 + 1e-6)] = value
    return crop


def warp_box_crop(image: np.ndarray, crop: BoxCrop, out_size, padding: str, value=0) -> np.ndarray:
    """A box crop (flukeline.align.geometry.box_crop) with its padding: context shows the photo
    around the content, constant `value` (the same content pixels), reflect the content mirrored.
    Beyond the photo's edges context and constant give `value`, reflect the mirrored photo; never
    a replicated edge, whose smeared rows look like animal."""
    left, top, width, height = crop.content
    size = tuple(int(v) for v in out_size)
    if check_padding(padding) == "reflect":
        # REFLECT_101 mirrors about the edge pixel without repeating it (plain REFLECT doubles it).
        matrix = crop.matrix.copy()
        matrix[:, 2] -= (left, top)
        content = warp(image, matrix, (width, height), cv2.BORDER_REFLECT_101)
        right, bottom = size[0] - width - left, size[1] - height - top
        return cv2.copyMakeBorder(content, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    # The warp replicates, so that an enlarged photo's edge pixels do not fade into the constant;
    # what lies beyond the edge is then blanked.
    shown = _blank_beyond_photo(warp(image, crop.matrix, size, cv2.BORDER_REPLICATE), crop.matrix, image.shape, value)
    if padding == "constant":
        inside = np.zeros(shown.shape[:2], bool)
        inside[top : top + height, left : left + width] = True
        shown[~inside] = value
    return shown


def write_png(path: str, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # OpenCV's default PNG settings encode fastest here (faster than compression level 1).
    if not cv2.imwrite(path, image):
        raise OSError(f"OpenCV could not write {path}")
