"""The learned detector's held-out check (`detect_evaluate`) on the annotated train images that
training held out (listed in the model file), written to results/detect/metrics.json, with an
overlay sheet (results/detect/overlays.png) of photos with the predicted mask outline, box and
keypoints. Each metric is computed from what the held-out images have, and is null otherwise:
- box_iou: against the annotation boxes (the best-matching one when a photo has several);
- mask_iou: against annotation masks, and only for a model whose mask channel learned masks (a
  model trained from boxes alone predicts box regions: `mask_target` box);
- pck@0.05 / pck@0.1 (share of keypoints within that fraction of the fluke span): over the
  keypoints that training labelled (`pck_keypoints`) and the held-out images label.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pandas as pd

from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_json_atomic, write_png_atomic
from flukeline.core.model_file import read_weights
from flukeline.core.runtime import parallel_map
from flukeline.detect.examples import keypoint_array
from flukeline.detect.unet import WEIGHTS_KEY

log = logging.getLogger(__name__)


def box_iou(a, b) -> float:
    """IoU of (x0, y0, x1, y1) boxes with exclusive ends."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def fluke_span(points: np.ndarray, names: list[str]) -> float:
    """Tip-to-tip distance when both tips are labelled, else the widest labelled pair."""
    if "left_tip" in names and "right_tip" in names:
        left, right = points[names.index("left_tip")], points[names.index("right_tip")]
        if np.isfinite(left).all() and np.isfinite(right).all():
            return float(np.linalg.norm(left - right))
    good = points[np.isfinite(points).all(axis=1)]
    if len(good) < 2:
        return float("nan")
    return float(max(np.linalg.norm(p - q) for p in good for q in good))


def pck(pred: np.ndarray, truth: np.ndarray, span: float, fraction: float) -> tuple[int, int]:
    """(correct, labelled): predictions within fraction x span of the labelled points."""
    labelled = np.isfinite(truth).all(axis=1)
    if not labelled.any() or not np.isfinite(span) or span <= 0:
        return 0, 0
    distance = np.linalg.norm(pred[labelled] - truth[labelled], axis=1)
    return int((distance <= fraction * span).sum()), int(labelled.sum())


def _file_mask_iou(truth_path: str, predicted_path: str) -> float:
    """mask_iou of a predicted mask file against its annotation (both PNGs, > 127 is mask)."""
    cv2.setNumThreads(1)  # parallelism is over photos
    truth = cv2.imread(truth_path, cv2.IMREAD_GRAYSCALE) > 127
    return mask_iou(cv2.imread(predicted_path, cv2.IMREAD_GRAYSCALE) > 127, truth)


def evaluate_detection(
    train,
    gt_keypoints,
    gt_boxes,
    masks,
    keypoints,
    boxes,
    holdout: list[str],
    names,
    mask_target: str = "mask",
    trained_keypoints: list[str] | None = None,
    threads: int = 1,
) -> dict:
    """Mask IoU, box IoU and PCK@0.05/0.1 of the fluke span on held-out annotated images; each
    None when nothing held out can measure it (see the module docstring). The masks are read on
    `threads` threads (two full-size PNGs per photo: most of the time)."""
    held = train[train["image"].isin(set(holdout))]
    masks, boxes = masks.set_index("image"), boxes.set_index("image")
    with_masks = [
        (row.mask_path, masks.loc[row.image, "mask_path"])
        for row in held.itertuples(index=False)
        if mask_target == "mask" and isinstance(row.mask_path, str)
    ]
    mask_ious = parallel_map(lambda paths: _file_mask_iou(*paths), with_masks, threads)
    truth_boxes = {image: part for image, part in gt_boxes.groupby("image")} if len(gt_boxes) else {}
    scored = [n for n in names if trained_keypoints is None or n in set(trained_keypoints)]
    truth_points, _ = keypoint_array(gt_keypoints, held["image"], names)
    # Keypoints training never saw are left out of PCK: their heatmaps are untrained.
    truth_points[:, [k for k, n in enumerate(names) if n not in scored]] = np.nan
    pred_kp = keypoints.pivot_table(index="image", columns="keypoint", values=["x", "y"])
    box_ious, hits = [], {0.05: [0, 0], 0.1: [0, 0]}
    per_keypoint = {n: [0, 0] for n in scored}
    for i, row in enumerate(held.itertuples(index=False)):
        if row.image in truth_boxes:
            p = boxes.loc[row.image]
            # Annotation boxes have exclusive ends like predicted ones (the annotate page, the demo).
            truth = truth_boxes[row.image][["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
            box_ious.append(max(box_iou((p.x0, p.y0, p.x1, p.y1), t) for t in truth))
        if not scored or not np.isfinite(truth_points[i]).any() or row.image not in pred_kp.index:
            continue
        pred = np.stack(
            [
                np.stack([pred_kp.loc[row.image, ("x", n)] for n in names]),
                np.stack([pred_kp.loc[row.image, ("y", n)] for n in names]),
            ],
            axis=1,
        )
        span = fluke_span(truth_points[i], names)
        for fraction in hits:
            ok, n = pck(pred, truth_points[i], span, fraction)
            hits[fraction][0] += ok
            hits[fraction][1] += n
        for name in scored:
            k = names.index(name)
            ok, n = pck(pred[k : k + 1], truth_points[i][k : k + 1], span, 0.1)
            per_keypoint[name][0] += ok
            per_keypoint[name][1] += n

    def mean(values):
        return float(np.mean(values)) if values else None

    return {
        "n_holdout": int(len(held)),
        "mask_target": mask_target,
        "n_mask_iou": len(mask_ious),
        "n_box_iou": len(box_ious),
        "mask_iou": mean(mask_ious),
        "box_iou": mean(box_ious),
        "pck_keypoints": scored,
        "pck@0.05": hits[0.05][0] / hits[0.05][1] if hits[0.05][1] else None,
        "pck@0.1": hits[0.1][0] / hits[0.1][1] if hits[0.1][1] else None,
        "pck@0.1_per_keypoint": {n: (ok / total if total else None) for n, (ok, total) in per_keypoint.items()},
        "box_methods": boxes["method"].value_counts().to_dict(),
    }


def overlay_sheet(
    frame: pd.DataFrame, masks, keypoints, boxes, names, out_png, n: int = 12, tile_width: int = 256
) -> None:
    """Grid of photos with the predicted mask outline (green), box (yellow) and keypoints."""
    masks, boxes = masks.set_index("image"), boxes.set_index("image")
    colours = [
        (255, 64, 64),
        (64, 255, 64),
        (64, 128, 255),
        (255, 200, 0),
        (255, 0, 255),
        (0, 255, 255),
        (255, 128, 0),
        (128, 0, 255),
    ]
    tiles = []
    for row in frame.head(n).itertuples(index=False):
        rgb = read_image_rgb(row.path).copy()
        mask = cv2.imread(masks.loc[row.image, "mask_path"], cv2.IMREAD_GRAYSCALE)
        contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, (0, 255, 0), 1)
        b = boxes.loc[row.image]
        cv2.rectangle(rgb, (int(b.x0), int(b.y0)), (int(b.x1) - 1, int(b.y1) - 1), (255, 255, 0), 1)
        for k, r in enumerate(keypoints[keypoints["image"] == row.image].set_index("keypoint").loc[names].itertuples()):
            cv2.circle(
                rgb, (int(round(r.x)), int(round(r.y))), 3, colours[k % len(colours)], -1 if r.confidence >= 0.3 else 1
            )
        scale = tile_width / rgb.shape[1]
        tile = cv2.resize(rgb, (tile_width, max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        tile = cv2.copyMakeBorder(
            tile, 0, max(0, 200 - tile.shape[0]), 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255)
        )[:200]
        cv2.putText(tile, b.method, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)]
    write_png_atomic(out_png, np.vstack(rows))


def keypoints_trained(meta: dict, names: list[str]) -> list[str]:
    """The keypoints training labelled (all of them for models saved without the counts)."""
    labels = meta.get("keypoint_labels")
    return list(names) if labels is None else [n for n in names if labels.get(n, 0) > 0]


def run_evaluate(
    model_path,
    train_path,
    gt_keypoints_path,
    gt_boxes_path,
    masks_path,
    keypoints_path,
    boxes_path,
    metrics_out,
    overlays_out,
    threads: int = 1,
) -> None:
    _, meta = read_weights(model_path, key=WEIGHTS_KEY, tensors=False)
    names = list(meta["params"]["keypoints"])
    train = pd.read_parquet(train_path)
    masks, keypoints, boxes = (pd.read_parquet(p) for p in (masks_path, keypoints_path, boxes_path))
    metrics = evaluate_detection(
        train,
        pd.read_parquet(gt_keypoints_path),
        pd.read_parquet(gt_boxes_path),
        masks,
        keypoints,
        boxes,
        meta["holdout"],
        names,
        meta.get("mask_target", "mask"),
        keypoints_trained(meta, names),
        threads,
    )
    write_json_atomic(metrics, metrics_out)
    log.info("detection on %d held-out images: %s", metrics["n_holdout"], json.dumps(metrics))
    sample = train[train["image"].isin(set(meta["holdout"]))]
    if sample.empty:
        sample = train
    overlay_sheet(sample, masks, keypoints, boxes, names, overlays_out)
