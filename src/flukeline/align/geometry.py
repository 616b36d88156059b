"""Align-stage geometry: the template frame (bounding box of the template points, span units),
the window an aligned crop shows (the frame grown by the margin, widened or heightened to the
output's aspect) and the matrix from original pixels to crop pixels; box crops (`box_crop`: the
box grown by the margin, letterboxed at one scale into the output, no template frame, so any
animal's box keeps its own aspect); box transforms (the box's place in the span frame, recorded
for images without a landmark fit); also the align table's transform, box and frame columns.

Coordinates: pixel centres at integer coordinates in the original image and in every crop (the
convention of cv2.warpAffine and of detect's keypoints); boxes are x0, y0 inclusive, x1, y1
exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flukeline.detect.letterbox import Letterbox


def template_frame(template: dict, names=None) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1, span units) of the template points among `names` (all when
    None or when none of them is in the template)."""
    points = [template[n] for n in (names or ()) if n in template] or list(template.values())
    xy = np.asarray(points, np.float64)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def box_transforms(boxes, frame) -> np.ndarray:
    """N x 2 x 3, original pixels -> span frame, one per box (x0, y0, x1, y1): the box's centre
    on the frame's centre, the whole box fitted inside the frame at one scale. This is the
    transform an image without a landmark fit records (fit.py); its crops come from box_crop."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    height = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    # Pixel centres are integers, so the box [x0, x1) spans x0 - 0.5 .. x1 - 0.5.
    cx, cy = (boxes[:, 0] + boxes[:, 2] - 1) / 2, (boxes[:, 1] + boxes[:, 3] - 1) / 2
    fx0, fy0, fx1, fy1 = frame
    scale = np.minimum((fx1 - fx0) / width, (fy1 - fy0) / height)  # span units per pixel
    out = np.zeros((len(boxes), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = scale
    out[:, 0, 2] = (fx0 + fx1) / 2 - scale * cx
    out[:, 1, 2] = (fy0 + fy1) / 2 - scale * cy
    return out


def box_transform(box, frame) -> np.ndarray:
    """2x3 of one box, see box_transforms."""
    return box_transforms([box], frame)[0]


def covers_photo(box, photo_size) -> bool:
    """Whether the box is the whole photo (detect.method none, or a detector that found nothing)."""
    x0, y0, x1, y1 = box
    return x0 <= 0 and y0 <= 0 and x1 >= photo_size[0] and y1 >= photo_size[1]


def box_window(box, margin: float, photo_size=None) -> tuple[float, float, float, float]:
    """Pixel edges (x0, y0, x1, y1) of what a box crop shows: the box grown by margin (a share of
    its width and height on each side). A box that is the whole photo is not grown: around it
    there is only padding, which would take resolution from the photo."""
    if photo_size is not None and covers_photo(box, photo_size):
        margin = 0.0
    x0, y0, x1, y1 = (float(v) for v in box)
    width = max(x1 - x0, 1.0) * (1 + 2 * margin)
    height = max(y1 - y0, 1.0) * (1 + 2 * margin)
    # Pixel centres are integers, so the box [x0, x1) spans x0 - 0.5 .. x1 - 0.5.
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    return cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2


@dataclass(frozen=True)
class BoxCrop:
    """A box crop's geometry: `matrix` (2x3, original pixels -> crop pixels, one scale on both
    axes) puts the window (box_window) on `content` (left, top, width, height: the crop pixels
    that show it, centred); the rest of the crop is padding (align.padding)."""

    matrix: np.ndarray
    content: tuple[int, int, int, int]


def box_crop(box, margin: float, out_size, photo_size=None) -> BoxCrop:
    """The window letterboxed into out_size: as large as fits at one scale, centred."""
    x0, y0, x1, y1 = box_window(box, margin, photo_size)
    width, height = x1 - x0, y1 - y0
    # The detector's letterbox gives the whole-pixel content rectangle (the limiting side fills
    # the output exactly); the scale stays exact, so the box keeps its aspect to a fraction of a
    # pixel, and the window's centre goes to the rectangle's centre.
    fit = Letterbox.fit(width, height, int(out_size[0]), int(out_size[1]))
    scale = min(out_size[0] / width, out_size[1] / height)
    u = fit.pad_left + fit.scaled_width / 2 - 0.5
    v = fit.pad_top + fit.scaled_height / 2 - 0.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[scale, 0.0, u - scale * cx], [0.0, scale, v - scale * cy]])
    return BoxCrop(matrix, (fit.pad_left, fit.pad_top, fit.scaled_width, fit.scaled_height))


def crop_region(frame, margin: float, out_size) -> tuple[float, float, float, float]:
    """The span-frame window an aligned crop shows: the frame grown by margin (a share of its width and
    height on each side), then widened or heightened about its centre to out_size's aspect."""
    x0, y0, x1, y1 = frame
    width = max(x1 - x0, 1e-6) * (1 + 2 * margin)
    height = max(y1 - y0, 1e-6) * (1 + 2 * margin)
    aspect = out_size[0] / out_size[1]
    if width / height < aspect:
        width = height * aspect
    else:
        height = width / aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2


def region_to_output(region, out_size) -> np.ndarray:
    """3x3: span frame -> output pixels; the region's edges land on the outer pixel edges."""
    x0, y0, x1, y1 = region
    sx = out_size[0] / (x1 - x0)
    sy = out_size[1] / (y1 - y0)
    return np.array([[sx, 0.0, -x0 * sx - 0.5], [0.0, sy, -y0 * sy - 0.5], [0.0, 0.0, 1.0]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 of outer(inner(p)); either may be 2x3 or 3x3."""
    a = np.vstack([outer[:2], [0.0, 0.0, 1.0]])
    b = np.vstack([inner[:2], [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def apply(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def crop_matrix(transform: np.ndarray, frame, margin: float, out_size) -> np.ndarray:
    """2x3 (or N x 2 x 3): original pixels -> crop pixels, for image transform(s) into the span
    frame."""
    outer = region_to_output(crop_region(frame, margin, out_size), out_size)
    transform = np.asarray(transform, np.float64)
    out = outer[:2, :2] @ transform  # broadcasts over a stack of transforms
    out[..., 2] += outer[:2, 2]
    return out


# The align table's columns: one image's transform, its box and the template frame.
MATRIX_COLUMNS = ["t00", "t01", "t02", "t10", "t11", "t12"]

FRAME_COLUMNS = ["frame_x0", "frame_y0", "frame_x1", "frame_y1"]

BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]


def transform_of(row) -> np.ndarray:
    return np.array([[row.t00, row.t01, row.t02], [row.t10, row.t11, row.t12]], np.float64)


def frame_of(row) -> tuple[float, float, float, float]:
    return row.frame_x0, row.frame_y0, row.frame_x1, row.frame_y1


def box_of(row) -> tuple[float, float, float, float]:
    return row.box_x0, row.box_y0, row.box_x1, row.box_y1
