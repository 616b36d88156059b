"""Align step 1 (`align_transforms`, one job): per image a 2x3 transform from original pixels to
the canonical *span frame* (fluke tips at x = -0.5 and +0.5, notch near y = 0, y down), fitted to
detect's landmarks (flukeline.align.fit), or derived from detect's box when the landmarks are too
few, too uncertain or fit implausibly (method "box": the box's place in the span frame, for the
table's span and rotation; such an image's crops are box crops, cut from the box alone, see
flukeline.align.crops).

Written to results/align/align.parquet (image, split, method, reason, n_landmarks, residual,
span_px, rotation_deg, t00..t12, box_x0..box_y1, frame_x0..frame_y1) with a contact sheet.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from flukeline.align.contact_sheet import contact_sheet
from flukeline.align.fit import fit_image
from flukeline.align.geometry import BOX_COLUMNS, FRAME_COLUMNS, MATRIX_COLUMNS, template_frame
from flukeline.align.settings import AlignSettings
from flukeline.core.io import write_parquet_atomic

log = logging.getLogger(__name__)


def image_table(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    columns = ["image", "split", "path", "width", "height"]
    return pd.concat([train[columns], test[columns]], ignore_index=True)


def estimate_transforms(
    images: pd.DataFrame, keypoints: pd.DataFrame, boxes: pd.DataFrame, settings: AlignSettings
) -> pd.DataFrame:
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
            names[part],
            xy[part],
            confidence[part],
            (x0, y0, x1, y1),
            settings,
            frame,
            box_is_whole_image=x0 <= 0 and y0 <= 0 and x1 >= width and y1 >= height,
        )
        linear = fit.transform[:, :2]
        rows.append(
            (
                image,
                split,
                fit.method,
                fit.reason,
                fit.n_landmarks,
                fit.residual,
                1.0 / math.sqrt(abs(np.linalg.det(linear))),
                -math.degrees(math.atan2(linear[1, 0], linear[0, 0])),  # the fluke's roll in the photo
                *fit.transform.ravel(),
                x0,
                y0,
                x1,
                y1,
                *frame,
            )
        )
    columns = [
        "image",
        "split",
        "method",
        "reason",
        "n_landmarks",
        "residual",
        "span_px",
        "rotation_deg",
        *MATRIX_COLUMNS,
        *BOX_COLUMNS,
        *FRAME_COLUMNS,
    ]
    table = pd.DataFrame(rows, columns=columns)
    table = table.astype(
        {
            "image": "string",
            "split": "string",
            "method": "string",
            "reason": "string",
            "n_landmarks": "int64",
            **{c: "float64" for c in columns[5:]},
        }
    )
    counts = table.groupby(["method", "reason"]).size().to_dict() if len(table) else {}
    log.info("transforms of %d images (%s): %s", len(table), settings.transform, counts)
    return table


def run_transforms(train_path, test_path, keypoints_path, boxes_path, params, table_path, sheet_path) -> None:
    settings = AlignSettings.from_params(params)
    train, test = pd.read_parquet(train_path), pd.read_parquet(test_path)
    images = image_table(train, test)
    keypoints = pd.read_parquet(keypoints_path)
    table = estimate_transforms(images, keypoints, pd.read_parquet(boxes_path), settings)
    write_parquet_atomic(table, table_path)
    paths = {(i, s): p for i, s, p in images[["image", "split", "path"]].itertuples(index=False)}
    contact_sheet(table, paths, keypoints, settings, sheet_path)
