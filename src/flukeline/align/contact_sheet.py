"""The alignment contact sheet (results/align/contact_sheet.png, "3 align" in the report): for
sampled images (mostly landmark fits, up to a third box fallbacks), the photo with its box and
landmarks (green: used, red: below the confidence threshold), its aligned crop with the template
points (yellow crosses) and the detected landmarks mapped in (landmark fits only), and its box
crop with align.padding, the crop a box fallback trains on. Crops are drawn at 256 x 128 (or at
another aspect, as large as fits that): the sheet does not follow align.sizes, so that editing
the sizes does not rewrite align.parquet and retrain every member."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from flukeline.align.geometry import (
    apply,
    box_crop,
    box_of,
    crop_matrix,
    crop_region,
    frame_of,
    region_to_output,
    transform_of,
)
from flukeline.align.settings import AlignSettings
from flukeline.align.warp import warp, warp_box_crop
from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_png_atomic

_GREEN, _RED, _BLUE, _YELLOW = (40, 200, 40), (230, 40, 40), (60, 120, 255), (255, 220, 0)

# The largest crop cell; a crop size of another aspect is drawn as large as fits in it.
_CROP_CELL = (256, 128)


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


def _crop_cell_size(crop_aspect) -> tuple[int, int]:
    if crop_aspect is None:
        return _CROP_CELL
    scale = min(_CROP_CELL[0] / crop_aspect[0], _CROP_CELL[1] / crop_aspect[1])
    return max(1, round(crop_aspect[0] * scale)), max(1, round(crop_aspect[1] * scale))


def _draw_points(crop, matrix, xy) -> None:
    for px, py in apply(matrix, xy):
        if np.isfinite([px, py]).all():
            cv2.circle(crop, (int(round(px)), int(round(py))), 2, _GREEN, -1, cv2.LINE_AA)


def _aligned_cell(rgb, row, xy_used, settings, crop_size) -> np.ndarray:
    """The aligned crop with the template's points; for a box fallback a grey cell saying so."""
    if row.method != "landmarks":
        cell = np.full((crop_size[1], crop_size[0], 3), 235, np.uint8)
        for k, text in enumerate(("no landmark fit:", "box crop used")):
            cv2.putText(cell, text, (6, 18 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        return cell
    matrix = crop_matrix(transform_of(row), frame_of(row), settings.margin, crop_size)
    crop = warp(rgb, matrix, crop_size)
    _draw_points(crop, matrix, xy_used)
    targets = apply(
        region_to_output(crop_region(frame_of(row), settings.margin, crop_size), crop_size),
        list(settings.template.values()),
    )
    for px, py in targets:
        cv2.drawMarker(crop, (int(round(px)), int(round(py))), _YELLOW, cv2.MARKER_CROSS, 7, 1)
    return crop


def _box_cell(rgb, row, xy_used, settings, crop_size) -> np.ndarray:
    geometry = box_crop(box_of(row), settings.margin, crop_size, (rgb.shape[1], rgb.shape[0]))
    crop = warp_box_crop(rgb, geometry, crop_size, settings.padding)
    _draw_points(crop, geometry.matrix, xy_used)
    return crop


def contact_sheet(
    table: pd.DataFrame,
    paths: dict,
    keypoints: pd.DataFrame,
    settings: AlignSettings,
    out_png,
    n_rows: int = 12,
    crop_aspect=None,
) -> None:
    """PNG: per sampled image, the photo with its box and landmarks (green: used, red: below the
    confidence threshold), its aligned crop with the template points (yellow crosses) and the
    detected landmarks mapped in, and its box crop; crops at crop_aspect (width, height)."""
    crop_size = _crop_cell_size(crop_aspect)
    cell_w, cell_h, label_h, pad = 256, 150, 16, 6
    rows = _sample_rows(table, n_rows)
    col_w = [cell_w, max(crop_size[0], 270), max(crop_size[0], 270)]  # room for the column titles
    sheet_w = pad + sum(w + pad for w in col_w)
    row_h = label_h + max(cell_h, crop_size[1]) + pad
    sheet = np.full((pad + 20 + max(1, len(rows)) * row_h, sheet_w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    x_cols = np.cumsum([pad] + [w + pad for w in col_w[:-1]])
    size = f"{crop_size[0]}x{crop_size[1]}"
    titles = ["photo, box, landmarks", f"aligned crop {size} (template +)", f"box crop {size} ({settings.padding})"]
    for x, title in zip(x_cols, titles):
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
            "keypoint"
        ].isin(list(settings.template)).to_numpy()
        # Photo thumbnail with the box and landmarks drawn at thumbnail scale.
        scale = min(cell_w / rgb.shape[1], cell_h / rgb.shape[0])
        thumb_matrix = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5]])
        tw, th = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
        thumb = warp(rgb, thumb_matrix, (tw, th))
        corners = [[row.box_x0 - 0.5, row.box_y0 - 0.5], [row.box_x1 - 0.5, row.box_y1 - 0.5]]
        bx = apply(thumb_matrix, corners).round().astype(int)
        cv2.rectangle(thumb, tuple(bx[0]), tuple(bx[1]), _BLUE, 1)
        for (px, py), ok in zip(apply(thumb_matrix, xy), used):
            if np.isfinite([px, py]).all():
                cv2.circle(thumb, (int(round(px)), int(round(py))), 3, _GREEN if ok else _RED, -1, cv2.LINE_AA)
        sheet[top : top + th, x_cols[0] : x_cols[0] + tw] = thumb
        for x, cell in zip(
            x_cols[1:],
            (
                _aligned_cell(rgb, row, xy[used], settings, crop_size),
                _box_cell(rgb, row, xy[used], settings, crop_size),
            ),
        ):
            sheet[top : top + crop_size[1], x : x + crop_size[0]] = cell
            # A grey outline just outside the crop shows its extent (a white photo fills it).
            cv2.rectangle(sheet, (int(x) - 1, top - 1), (int(x) + crop_size[0], top + crop_size[1]), (170, 170, 170), 1)
    write_png_atomic(out_png, sheet)
