"""Align stage: map every fluke onto a landmark template, then crop it at each configured size.

Two steps, one rule each:

- transforms (`align_transforms`, one job): per image a 2x3 transform from original pixels to
  the canonical *span frame* (fluke tips at x = -0.5 and +0.5, notch near y = 0, y down), fitted
  to detect's landmarks, or derived from detect's box when the landmarks are too few, too
  uncertain or fit implausibly. Both paths end in the same kind of transform, so cropping has a
  single code path. Written to results/align/align.parquet with a contact sheet.
- crops (`align`, one job per size): the template's bounding box grown by the margin, widened or
  heightened to the output's aspect (never stretched), composed with the image's transform: one
  warpAffine from the original photo per crop. Every image also gets a box-only crop, and its
  detect mask warped both ways when there is one (a 4th channel for the embed stage).

Coordinates: pixel centres at integer coordinates in the original image and in every crop (the
convention of cv2.warpAffine and of detect's keypoints); boxes are x0, y0 inclusive, x1, y1
exclusive.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.io import read_image_rgb, write_parquet_atomic
from flukeline.runtime import worker_count

log = logging.getLogger(__name__)

# The demo's mean landmark positions (flukeline.demo.CANONICAL_KEYPOINTS, span units); the config
# normally names the template, this is only the default for callers that pass none.
DEFAULT_TEMPLATE = {
    "left_tip": (-0.5, -0.06),
    "notch": (0.0, 0.04),
    "right_tip": (0.5, -0.06),
    "left_trailing_mid": (-0.25, -0.035),
    "right_trailing_mid": (0.25, -0.035),
    "peduncle": (0.0, 0.33),
}
TRANSFORMS = ("similarity", "affine")
# A landmark further than this many max_residuals from the fitted template point is an outlier
# for RANSAC (ground-truth demo landmarks deviate at most ~0.1 span from the mean template).
INLIER_FACTOR = 1.5
# An affine fit that squashes one axis this much more than the other is no fluke pose (the demo's
# strongest tilt foreshortens by ~1.3); it means collinear or mislabelled landmarks.
MAX_ANISOTROPY = 3.0
# The fitted landmarks must spread over at least this share of the template's width (e.g. a tip
# and the notch); on a learned detector's output this removes fits to bunched-up landmarks.
MIN_COVERAGE = 0.5
MATRIX_COLUMNS = ["t00", "t01", "t02", "t10", "t11", "t12"]
FRAME_COLUMNS = ["frame_x0", "frame_y0", "frame_x1", "frame_y1"]
BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]


@dataclass(frozen=True)
class AlignSettings:
    """The align.* config keys that the transform step consumes (see config.schema.yaml)."""

    template: dict
    transform: str = "similarity"
    min_keypoint_confidence: float = 0.3
    min_landmarks: int = 3
    max_residual: float = 0.15
    max_scale_ratio: float = 1.6
    max_rotation_deg: float = 90.0
    margin: float = 0.1

    @classmethod
    def from_params(cls, params: dict | None) -> "AlignSettings":
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown align settings {unknown}")
        params.setdefault("template", DEFAULT_TEMPLATE)
        params["template"] = {str(k): (float(v[0]), float(v[1])) for k, v in params["template"].items()}
        settings = cls(**params)
        if settings.transform not in TRANSFORMS:
            raise ValueError(f"align.transform must be one of {TRANSFORMS}, not {settings.transform!r}")
        if len(settings.template) < 2:
            raise ValueError("align.template needs at least two keypoints")
        return settings

    @property
    def min_points(self) -> int:
        # A similarity is fixed by 2 points, an affine transform by 3.
        return max(int(self.min_landmarks), 2 if self.transform == "similarity" else 3)


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): width, height."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


# ------------------------------------------------------------------------------------------
# Geometry (pure functions; matrices are float64 numpy arrays)
# ------------------------------------------------------------------------------------------


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
    on the frame's centre, the whole box fitted inside the frame at one scale (a box crop, no
    stretching)."""
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


def crop_region(frame, margin: float, out_size) -> tuple[float, float, float, float]:
    """The span-frame window a crop shows: the frame grown by margin (a share of its width and
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
        src.reshape(-1, 1, 2), dst.reshape(-1, 1, 2), method=cv2.RANSAC,
        ransacReprojThreshold=INLIER_FACTOR * settings.max_residual, maxIters=2000, confidence=0.999, refineIters=10,
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


# ------------------------------------------------------------------------------------------
# Warping
# ------------------------------------------------------------------------------------------


def warp(image: np.ndarray, matrix: np.ndarray, out_size, border=cv2.BORDER_REPLICATE, value=0) -> np.ndarray:
    """cv2.warpAffine of `image` by `matrix` (source pixels -> output pixels) into out_size.

    Only the part of the image the output samples is touched, and when the warp shrinks by more
    than 2x that part is first reduced with INTER_AREA, so the bilinear warp does not alias fine
    trailing-edge detail. Both steps leave BORDER_REPLICATE/CONSTANT semantics unchanged.
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
    x0 = min(max(math.floor(min(xs)) - pad, 0), width - 1)
    x1 = min(max(math.ceil(max(xs)) + pad, 0), width - 1) + 1
    y0 = min(max(math.floor(min(ys)) - pad, 0), height - 1)
    y1 = min(max(math.ceil(max(ys)) + pad, 0), height - 1) + 1
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
    return cv2.warpAffine(source, warp_matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=value)


def _write_png(path: str, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # OpenCV's default PNG settings encode fastest here (faster than compression level 1).
    if not cv2.imwrite(path, image):
        raise OSError(f"OpenCV could not write {path}")


# ------------------------------------------------------------------------------------------
# Step 1: transforms
# ------------------------------------------------------------------------------------------


def _image_table(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    columns = ["image", "split", "path", "width", "height"]
    return pd.concat([train[columns], test[columns]], ignore_index=True)


def estimate_transforms(images: pd.DataFrame, keypoints: pd.DataFrame, boxes: pd.DataFrame, settings: AlignSettings) -> pd.DataFrame:
    """One row per image of `images` (image, split): method, reason, n_landmarks, residual, span_px
    (fluke span in original pixels), rotation_deg (its roll in the photo, clockwise on screen),
    the transform t00..t12 (original pixels -> span frame), the box and the template frame the
    crops are built around."""
    images = images[["image", "split", "width", "height"]].merge(
        boxes[["image", "split", "x0", "y0", "x1", "y1"]], on=["image", "split"], how="left", validate="one_to_one"
    )
    if images["x0"].isna().any():
        missing = images.loc[images["x0"].isna(), "image"].tolist()[:5]
        raise ValueError(f"boxes table has no box for {missing} ...")
    keypoints = keypoints[keypoints["keypoint"].isin(list(settings.template))]
    if keypoints.duplicated(["image", "split", "keypoint"]).any():
        raise ValueError("keypoints table has more than one row for an image and keypoint")
    # Crops frame the template points the detector provides (a merged config may list more).
    frame = template_frame(settings.template, sorted(set(keypoints["keypoint"])))
    # Plain arrays sliced per image: pandas indexing per image would cost more than the fit.
    keypoints = keypoints.sort_values(["image", "split", "keypoint"], kind="stable")  # fit independent of row order
    names = keypoints["keypoint"].astype(str).to_numpy(object)
    xy = keypoints[["x", "y"]].to_numpy(np.float64)
    confidence = keypoints["confidence"].to_numpy(np.float64)
    keys = list(zip(keypoints["image"], keypoints["split"]))
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    spans = {keys[a]: slice(a, b) for a, b in zip(starts, starts[1:] + [len(keys)])}
    rows = []
    columns = ["image", "split", "x0", "y0", "x1", "y1", "width", "height"]
    for image, split, x0, y0, x1, y1, width, height in images[columns].itertuples(index=False):
        part = spans.get((image, split), slice(0, 0))
        fit = fit_image(
            names[part], xy[part], confidence[part], (x0, y0, x1, y1), settings, frame,
            box_is_whole_image=x0 <= 0 and y0 <= 0 and x1 >= width and y1 >= height,
        )
        linear = fit.transform[:, :2]
        rows.append((
            image, split, fit.method, fit.reason, fit.n_landmarks, fit.residual,
            1.0 / math.sqrt(abs(np.linalg.det(linear))),
            -math.degrees(math.atan2(linear[1, 0], linear[0, 0])),  # the fluke's roll in the photo
            *fit.transform.ravel(), x0, y0, x1, y1, *frame,
        ))
    columns = ["image", "split", "method", "reason", "n_landmarks", "residual", "span_px", "rotation_deg",
               *MATRIX_COLUMNS, *BOX_COLUMNS, *FRAME_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    table = table.astype({"image": "string", "split": "string", "method": "string", "reason": "string",
                          "n_landmarks": "int64", **{c: "float64" for c in columns[5:]}})
    counts = table.groupby(["method", "reason"]).size().to_dict() if len(table) else {}
    log.info("transforms of %d images (%s): %s", len(table), settings.transform, counts)
    return table


def transform_of(row) -> np.ndarray:
    return np.array([[row.t00, row.t01, row.t02], [row.t10, row.t11, row.t12]], np.float64)


def frame_of(row) -> tuple[float, float, float, float]:
    return row.frame_x0, row.frame_y0, row.frame_x1, row.frame_y1


def box_of(row) -> tuple[float, float, float, float]:
    return row.box_x0, row.box_y0, row.box_x1, row.box_y1


# ------------------------------------------------------------------------------------------
# Contact sheet: originals with landmarks -> aligned crop -> box crop
# ------------------------------------------------------------------------------------------

_GREEN, _RED, _BLUE, _YELLOW = (40, 200, 40), (230, 40, 40), (60, 120, 255), (255, 220, 0)


def _sample_rows(table: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    """Evenly spaced by name: mostly landmark fits, up to a third box fallbacks when present."""
    table = table.sort_values(["split", "image"], kind="stable")
    fallback = table[table["method"] == "box"]
    n_box = min(len(fallback), n_rows // 3)
    landmark = table[table["method"] == "landmarks"]
    n_landmark = min(len(landmark), n_rows - n_box)
    n_box = min(len(fallback), n_rows - n_landmark)

    def spaced(df, n):
        return df.iloc[np.linspace(0, len(df) - 1, n).round().astype(int)] if n else df.iloc[:0]

    return pd.concat([spaced(landmark, n_landmark), spaced(fallback, n_box)])


def contact_sheet(table: pd.DataFrame, paths: dict, keypoints: pd.DataFrame, settings: AlignSettings, out_png, n_rows: int = 12) -> None:
    """PNG: per sampled image, the photo with its box and landmarks (green: used, red: below the
    confidence threshold), its aligned crop with the template points (yellow crosses) and the
    detected landmarks mapped in, and its box crop."""
    crop_size, cell_w, cell_h, label_h, pad = (256, 128), 256, 150, 16, 6
    rows = _sample_rows(table, n_rows)
    col_w = [cell_w, crop_size[0], crop_size[0]]
    sheet_w = pad + sum(w + pad for w in col_w)
    row_h = label_h + max(cell_h, crop_size[1]) + pad
    sheet = np.full((pad + 20 + max(1, len(rows)) * row_h, sheet_w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    x_cols = np.cumsum([pad] + [w + pad for w in col_w[:-1]])
    for x, title in zip(x_cols, ["photo, box, landmarks", "aligned crop (template +)", "box crop"]):
        cv2.putText(sheet, title, (int(x), pad + 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, row in enumerate(rows.itertuples(index=False)):
        top = pad + 20 + i * row_h
        label = f"{row.image}  {row.method}"
        label += f" ({row.reason})" if row.method == "box" else f"  n={row.n_landmarks} rms={row.residual:.3f}"
        cv2.putText(sheet, label, (pad, top + 11), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        top += label_h
        rgb = read_image_rgb(paths[(row.image, row.split)])
        points = keypoints[(keypoints["image"] == row.image) & (keypoints["split"] == row.split)]
        xy = points[["x", "y"]].to_numpy(np.float64)
        used = (points["confidence"].to_numpy(np.float64) >= settings.min_keypoint_confidence) & points[
            "keypoint"].isin(list(settings.template)).to_numpy()
        # Photo thumbnail with the box and landmarks drawn at thumbnail scale.
        scale = min(cell_w / rgb.shape[1], cell_h / rgb.shape[0])
        thumb_matrix = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5]])
        tw, th = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
        thumb = warp(rgb, thumb_matrix, (tw, th))
        bx = apply(thumb_matrix, [[row.box_x0 - 0.5, row.box_y0 - 0.5], [row.box_x1 - 0.5, row.box_y1 - 0.5]]).round().astype(int)
        cv2.rectangle(thumb, tuple(bx[0]), tuple(bx[1]), _BLUE, 1)
        for (px, py), ok in zip(apply(thumb_matrix, xy), used):
            if np.isfinite([px, py]).all():
                cv2.circle(thumb, (int(round(px)), int(round(py))), 3, _GREEN if ok else _RED, -1, cv2.LINE_AA)
        sheet[top:top + th, x_cols[0]:x_cols[0] + tw] = thumb
        crops = []
        for transform in (transform_of(row), box_transform(box_of(row), frame_of(row))):
            matrix = crop_matrix(transform, frame_of(row), settings.margin, crop_size)
            crop = warp(rgb, matrix, crop_size)
            for px, py in apply(matrix, xy[used]):
                if np.isfinite([px, py]).all():
                    cv2.circle(crop, (int(round(px)), int(round(py))), 2, _GREEN, -1, cv2.LINE_AA)
            targets = apply(region_to_output(crop_region(frame_of(row), settings.margin, crop_size), crop_size),
                            list(settings.template.values()))
            for px, py in targets:
                cv2.drawMarker(crop, (int(round(px)), int(round(py))), _YELLOW, cv2.MARKER_CROSS, 7, 1)
            crops.append(crop)
        for x, crop in zip(x_cols[1:], crops):
            sheet[top:top + crop_size[1], x:x + crop_size[0]] = crop
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    _write_png(str(tmp), sheet)
    tmp.replace(out_png)


def run_transforms(train_path, test_path, keypoints_path, boxes_path, params, table_path, sheet_path) -> None:
    settings = AlignSettings.from_params(params)
    train, test = pd.read_parquet(train_path), pd.read_parquet(test_path)
    images = _image_table(train, test)
    keypoints = pd.read_parquet(keypoints_path)
    table = estimate_transforms(images, keypoints, pd.read_parquet(boxes_path), settings)
    write_parquet_atomic(table, table_path)
    paths = {(i, s): p for i, s, p in images[["image", "split", "path"]].itertuples(index=False)}
    contact_sheet(table, paths, keypoints, settings, sheet_path)


# ------------------------------------------------------------------------------------------
# Step 2: crops at one size
# ------------------------------------------------------------------------------------------


def _crop_one(task):
    """Read one photo (and mask), write its aligned and box crops (and warped masks)."""
    path, aligned, box, out_size, crop_png, box_png, mask_path, mask_png, box_mask_png = task
    cv2.setNumThreads(1)  # parallelism is over images
    rgb = read_image_rgb(path)
    _write_png(box_png, warp(rgb, box, out_size))
    if crop_png != box_png:
        _write_png(crop_png, warp(rgb, aligned, out_size))
    if mask_path is None:
        return
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"cannot read mask {mask_path}")
    # Masks are stored at the photo's resolution (identity here); one that is not is rescaled.
    rx, ry = rgb.shape[1] / mask.shape[1], rgb.shape[0] / mask.shape[0]
    mask_to_photo = np.array([[rx, 0.0, 0.5 * rx - 0.5], [0.0, ry, 0.5 * ry - 0.5]])
    # Outside the photo there is no fluke to see: constant 0 rather than a replicated edge.
    _write_png(box_mask_png, warp(mask, compose(box, mask_to_photo), out_size, cv2.BORDER_CONSTANT, 0))
    if mask_png != box_mask_png:
        _write_png(mask_png, warp(mask, compose(aligned, mask_to_photo), out_size, cv2.BORDER_CONSTANT, 0))


def _file_names(images: pd.DataFrame) -> list[str]:
    """<stem>.png per image; the full name where two images of a split share a stem."""
    stems = pd.Series([Path(i).stem for i in images["image"]], index=images.index)
    clash = pd.DataFrame({"split": images["split"], "stem": stems}).duplicated(keep=False).to_numpy()
    return [f"{image.replace('.', '_')}.png" if c else f"{stem}.png" for image, stem, c in zip(images["image"], stems, clash)]


def crop_images(images: pd.DataFrame, transforms: pd.DataFrame, masks: pd.DataFrame | None, size: str, margin: float,
                crops_dir, threads: int = 1) -> pd.DataFrame:
    """Write every image's crops at one size; returns the table the embed stage reads."""
    out_size = parse_size(size)
    table = images[["image", "split", "path"]].merge(transforms, on=["image", "split"], how="left", validate="one_to_one")
    if table["method"].isna().any():
        missing = table.loc[table["method"].isna(), "image"].tolist()[:5]
        raise ValueError(f"align table has no transform for {missing} ...")
    mask_paths = [None] * len(table)
    if masks is not None and len(masks):
        found = masks.dropna(subset=["mask_path"])
        if "area" in found:
            found = found[found["area"] > 0]
        lookup = {(i, s): str(p) for i, s, p in found[["image", "split", "mask_path"]].itertuples(index=False)}
        mask_paths = [lookup.get((i, s)) for i, s in zip(table["image"], table["split"])]
    crops_dir = Path(crops_dir).resolve()
    names = _file_names(table)
    folders = {kind: crops_dir / kind for kind in ("aligned", "box", "aligned_mask", "box_mask")}
    for folder in folders.values():
        for split in table["split"].unique():
            (folder / split).mkdir(parents=True, exist_ok=True)
    frames = table[FRAME_COLUMNS].drop_duplicates().to_numpy(np.float64)
    if len(frames) > 1:
        raise ValueError(f"align table mixes template frames {frames.tolist()}")
    frame = tuple(frames[0]) if len(frames) else (0.0, 0.0, 1.0, 1.0)
    transforms = table[MATRIX_COLUMNS].to_numpy(np.float64).reshape(-1, 2, 3)
    aligned_matrices = crop_matrix(transforms, frame, margin, out_size)
    box_matrices = crop_matrix(box_transforms(table[BOX_COLUMNS].to_numpy(np.float64), frame), frame, margin, out_size)
    tasks, rows = [], []
    for row, name, mask_path, aligned, box in zip(table.itertuples(index=False), names, mask_paths, aligned_matrices, box_matrices):
        box_png = str(folders["box"] / row.split / name)
        crop_png = str(folders["aligned"] / row.split / name) if row.method == "landmarks" else box_png
        box_mask_png = str(folders["box_mask"] / row.split / name) if mask_path else None
        mask_png = (str(folders["aligned_mask"] / row.split / name) if row.method == "landmarks" else box_mask_png) if mask_path else None
        tasks.append((row.path, aligned, box, out_size, crop_png, box_png, mask_path, mask_png, box_mask_png))
        rows.append((row.image, row.split, row.method, row.n_landmarks, row.residual, crop_png, box_png, mask_png, box_mask_png))
    workers = min(worker_count(threads), max(1, len(tasks)))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_crop_one, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers)))))
    else:
        for task in tasks:
            _crop_one(task)
    out = pd.DataFrame(rows, columns=["image", "split", "method", "n_landmarks", "residual", "crop_path", "box_crop_path",
                                      "mask_crop_path", "box_mask_crop_path"])
    out = out.astype({"image": "string", "split": "string", "method": "string", "n_landmarks": "int64", "residual": "float64",
                      "crop_path": "string", "box_crop_path": "string", "mask_crop_path": "string", "box_mask_crop_path": "string"})
    log.info("cropped %d images to %s (%d aligned, %d with masks)", len(out), size,
             int((out["method"] == "landmarks").sum()), int(out["mask_crop_path"].notna().sum()))
    return out


def run(train_path, test_path, transforms_path, masks_path, size, margin, table_path, crops_dir, threads=1) -> None:
    images = _image_table(pd.read_parquet(train_path), pd.read_parquet(test_path))
    masks = pd.read_parquet(masks_path) if masks_path else None
    table = crop_images(images, pd.read_parquet(transforms_path), masks, size, margin, crops_dir, threads)
    write_parquet_atomic(table, table_path)
