"""Learned detection of every train and test image (`detect_predict`).

The U-Net runs on a letterboxed copy at `detect.model.input_size`, and its outputs are mapped back
to original pixels (flukeline.detect.letterbox). Per image: the mask's largest component (a PNG
under results/detect/masks/), the K keypoints with confidences, and a box from the fallback chain
mask box widened to the confident keypoints -> mask box -> keypoint box x1.2 -> threshold detector
-> whole image (method recorded). Written: masks.parquet (image, split, mask_path, area, score),
keypoints.parquet (image, split, keypoint, x, y, confidence) and boxes.parquet (image, split, x0,
y0, x1, y1, method, score). A keypoint that no training image labelled gets confidence 0 (a
detector trained from boxes alone gives align no landmarks, so align makes box crops). A model
trained from boxes without masks (`mask_target` box) writes box regions as its masks.

Photos are read 32 at a time (never all at once). With a cache folder, each photo's detection (its
mask PNG, keypoints, confidences and box) is kept under the key (model file's SHA-1, box settings,
photo's SHA-1), so a detector that was not retrained (detect.model.retrain) detects only photos it
has not seen, such as a new season's (flukeline.core.photo_cache).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_parquet_atomic
from flukeline.core.photo_cache import PhotoCache, bytes_array, file_sha1
from flukeline.core.runtime import configure_torch, parallel_map, select_device
from flukeline.core.tensors import to_tensor
from flukeline.detect.boxes import Box, clip_box, keypoint_box, largest_component, mask_box
from flukeline.detect.heatmap import decode_peaks, heatmap_probabilities, peak_mass
from flukeline.detect.letterbox import Letterbox
from flukeline.detect.settings import BoxSettings
from flukeline.detect.threshold import threshold_box
from flukeline.detect.unet import PAD_RGB, load_detector, training_settings

log = logging.getLogger(__name__)


def predict_batch(model, rgbs: list[np.ndarray], size, sigma: float, device) -> list[dict]:
    """Mask probability (original pixels), keypoints (original pixels) and confidences."""
    boxes = [Letterbox.fit(rgb.shape[1], rgb.shape[0], *size) for rgb in rgbs]
    x = to_tensor(np.stack([b.apply(rgb, fill=PAD_RGB) for b, rgb in zip(boxes, rgbs)])).to(device)
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        logits = model(x).float().cpu().numpy()
    mask_prob = 1 / (1 + np.exp(-logits[:, 0]))
    heat = heatmap_probabilities(logits[:, 1:])
    points, _ = decode_peaks(heat)
    confidence = peak_mass(heat, points, radius=max(1, int(round(2 * sigma))))
    out = []
    for i, box in enumerate(boxes):
        positive = (mask_prob[i] > 0.5) & box.valid_region()
        out.append(
            {
                "mask_input": mask_prob[i],
                "letterbox": box,
                "mask_score": float(mask_prob[i][positive].mean()) if positive.any() else 0.0,
                "keypoints": box.to_original(points[i]),
                "confidence": confidence[i],
            }
        )
    return out


def fuse_box(
    mask: np.ndarray,
    mask_score: float,
    points: np.ndarray,
    confidence: np.ndarray,
    rgb: np.ndarray,
    settings: BoxSettings,
) -> Box:
    """Fallback chain: mask box widened to the confident keypoints (thin tips escape masks) ->
    mask box -> keypoint box x1.2 -> threshold detector -> whole image."""
    height, width = mask.shape
    min_conf = float(settings.min_keypoint_confidence)
    min_area = float(settings.min_area_fraction)
    good = points[confidence >= min_conf]
    trusted = mask_score >= float(settings.min_mask_score) and mask.mean() >= min_area
    from_mask = mask_box(mask) if trusted else None
    if from_mask is not None and len(good):
        x0, y0 = min(from_mask[0], good[:, 0].min()), min(from_mask[1], good[:, 1].min())
        x1, y1 = max(from_mask[2], good[:, 0].max() + 1), max(from_mask[3], good[:, 1].max() + 1)
        return Box(*clip_box((x0, y0, x1, y1), width, height), "mask+keypoints", mask_score)
    if from_mask is not None:
        return Box(*from_mask, "mask", mask_score)
    from_points = keypoint_box(points, confidence, min_conf, width, height)
    if from_points is not None:
        return Box(*from_points, "keypoints", float(confidence[confidence >= min_conf].mean()))
    return threshold_box(rgb, min_area)


def predict_all(
    model_path,
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: BoxSettings | Mapping,
    masks_dir,
    threads: int = 1,
    cache_dir=None,
):
    """Masks (PNG + table), keypoints and boxes for every train and test image. settings: the
    boxes' (a mapping, e.g. a gallery's detect section, is parsed). cache_dir: per-photo
    detections kept across runs (used when the tables have the photos' sha1)."""
    settings = BoxSettings.of(settings)
    configure_torch(threads)
    device = select_device()
    model, meta = load_detector(model_path, device)
    trained_with = training_settings(meta["params"])
    size, names = tuple(trained_with.input_size), list(trained_with.keypoints)
    masks_dir = Path(masks_dir)
    masks_dir.mkdir(parents=True, exist_ok=True)
    columns = ["image", "split", "path"] + (["sha1"] if "sha1" in train and "sha1" in test else [])
    images = pd.concat([train[columns], test[columns]], ignore_index=True)
    use_cache = cache_dir is not None and "sha1" in images
    cache = PhotoCache(cache_dir if use_cache else None, "detect", [file_sha1(model_path), settings.to_dict()])
    sigma = float(trained_with.heatmap_sigma)
    # A keypoint no training image labelled has an untrained heatmap: its peak means nothing, so
    # its confidence is 0 and align never uses it (models without the counts: all trained).
    labels = meta.get("keypoint_labels") or {}
    trained = np.array([labels.get(name, 1) > 0 for name in names])
    mask_rows, kp_rows, box_rows = [], [], []
    batch_size = 32

    def finish(item):
        # Per image, in threads (OpenCV releases the GIL): mask back to original pixels, its
        # largest blob, the PNG, the fused box.
        row, rgb, pred = item
        cv2.setNumThreads(1)
        mask = largest_component(pred["letterbox"].map_back(pred["mask_input"]) > 0.5)
        mask_path = masks_dir / row.split / (Path(row.image).stem + ".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        # Encoded once, for the file and the cache (a full-size PNG costs ~10 ms).
        ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        if not ok:
            raise OSError(f"could not encode {mask_path}")
        mask_path.write_bytes(png.tobytes())
        box = fuse_box(mask, pred["mask_score"], pred["keypoints"], pred["confidence"], rgb, settings)
        area = int(mask.sum())
        if use_cache:
            arrays = _detection_arrays(pred, box)
            arrays.update(mask_png=bytes_array(png.tobytes()), area=np.array(area))
            cache.put(cache.key(row.sha1), **arrays)
        return row, str(mask_path), area, pred, box

    def cached(row):
        if not use_cache:
            return None
        key = cache.key(row.sha1)
        found = cache.get(key)
        if found is None:
            return None
        if "area" not in found:  # an entry from before the area was kept: it is stored with it
            found["area"] = np.array(int((cv2.imdecode(found["mask_png"], cv2.IMREAD_GRAYSCALE) > 0).sum()))
            cache.put(key, **found)
        mask_path = masks_dir / row.split / (Path(row.image).stem + ".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.write_bytes(found["mask_png"].tobytes())
        return (row, str(mask_path), *_detection_from_arrays(found))

    for start in tqdm(range(0, len(images), batch_size), desc="detect", mininterval=5):
        chunk = images.iloc[start : start + batch_size]
        rows = list(chunk.itertuples(index=False))
        done = parallel_map(cached, rows, threads) if use_cache else [None] * len(rows)
        todo = [row for row, hit in zip(rows, done) if hit is None]
        if todo:
            rgbs = parallel_map(read_image_rgb, [row.path for row in todo], threads)
            predictions = predict_batch(model, rgbs, size, sigma, device)
            for pred in predictions:
                pred["confidence"] = np.where(trained, pred["confidence"], 0.0)
            fresh = iter(parallel_map(finish, zip(todo, rgbs, predictions), threads))
            done = [hit if hit is not None else next(fresh) for hit in done]
        for row, mask_path, area, pred, box in done:
            mask_rows.append((row.image, row.split, mask_path, area, pred["mask_score"]))
            for name, (x, y), c in zip(names, pred["keypoints"], pred["confidence"]):
                kp_rows.append((row.image, row.split, name, float(x), float(y), float(c)))
            box_rows.append((row.image, row.split, box.x0, box.y0, box.x1, box.y1, box.method, box.score))
    masks = pd.DataFrame(mask_rows, columns=["image", "split", "mask_path", "area", "score"])
    keypoints = pd.DataFrame(kp_rows, columns=["image", "split", "keypoint", "x", "y", "confidence"])
    boxes = pd.DataFrame(box_rows, columns=["image", "split", "x0", "y0", "x1", "y1", "method", "score"])
    log.info("detected %d images: %s", len(boxes), boxes["method"].value_counts().to_dict())
    cache.close()
    if use_cache:
        log.info(cache.summary(f"detections of {len(images)} photos"))
    return masks, keypoints, boxes


def _detection_arrays(pred: dict, box: Box) -> dict[str, np.ndarray]:
    """One photo's detection as a cache entry's arrays (the mask PNG apart)."""
    return {
        "keypoints": np.asarray(pred["keypoints"], np.float64),
        "confidence": np.asarray(pred["confidence"], np.float64),
        "scores": np.array([pred["mask_score"], box.score], np.float64),
        "box": np.array([box.x0, box.y0, box.x1, box.y1], np.int64),  # boxes are whole pixels
        "method": np.array(box.method),
    }


def _detection_from_arrays(found: dict) -> tuple[int, dict, Box]:
    """(mask area, prediction, box) of a cache entry, as `finish` returns them."""
    area = int(found["area"])
    mask_score, box_score = (float(v) for v in found["scores"])
    pred = {"mask_score": mask_score, "keypoints": found["keypoints"], "confidence": found["confidence"]}
    x0, y0, x1, y1 = (int(v) for v in found["box"])
    return area, pred, Box(x0, y0, x1, y1, str(found["method"]), box_score)


def run_predict(
    model_path, train_path, test_path, params, masks_dir, masks_out, keypoints_out, boxes_out, threads=1, cache_dir=None
):
    """detect-predict: params, BoxSettings' keys (the detect_predict rule's JSON)."""
    settings = BoxSettings.from_dict(params)
    masks, keypoints, boxes = predict_all(
        model_path, pd.read_parquet(train_path), pd.read_parquet(test_path), settings, masks_dir, threads, cache_dir
    )
    write_parquet_atomic(masks, masks_out)
    write_parquet_atomic(keypoints, keypoints_out)
    write_parquet_atomic(boxes, boxes_out)
