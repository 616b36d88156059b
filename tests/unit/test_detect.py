"""Learned detection: letterbox geometry, heatmap decoding, box fusion, metrics, weights, resume."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers_annotated import NAMES, annotated_photos, fluke, tiny_detector
from safetensors.torch import save_file

import flukeline.core.training as detect_train
from flukeline.core.errors import InputError
from flukeline.core.photo_cache import PhotoCache, stored_keys
from flukeline.detect.evaluate import box_iou, fluke_span, mask_iou, pck
from flukeline.detect.heatmap import decode_peaks, gaussian_targets
from flukeline.detect.letterbox import Letterbox
from flukeline.detect.predict import fuse_box, predict_all
from flukeline.detect.settings import BoxSettings
from flukeline.detect.train import detector_loss, train_detector
from flukeline.detect.unet import build_detector

PARAMS = tiny_detector()


@pytest.mark.parametrize("width,height,gray", [(257, 171, False), (120, 300, True), (2528, 382, False), (5, 3, True)])
def test_letterbox_points_round_trip_exactly(width, height, gray):
    box = Letterbox.fit(width, height, 128, 96)
    points = np.array([[0, 0], [width - 1, height - 1], [width * 0.37, height * 0.61]])
    assert np.allclose(box.to_original(box.to_input(points)), points)
    # The photo's corner pixel centres land inside the letterbox's valid region.
    corners = box.to_input(np.array([[0, 0], [width - 1, height - 1]]))
    region = box.valid_region()
    for x, y in corners:
        assert region[int(round(np.clip(y, 0, 95))), int(round(np.clip(x, 0, 127)))]
    image = np.zeros((height, width) if gray else (height, width, 3), np.uint8)
    assert box.apply(image).shape[:2] == (96, 128)


@pytest.mark.parametrize("width,height", [(257, 171), (120, 300), (2528, 382)])
def test_a_mark_found_in_the_letterbox_maps_back_to_its_pixel(width, height):
    """Render a blob, find it on the detector input, map back: within a pixel of the truth."""
    truth = np.array([width * 0.3, height * 0.7])
    ys, xs = np.mgrid[0:height, 0:width]
    sigma = max(width, height) / 40
    plane = np.exp(-((xs - truth[0]) ** 2 + (ys - truth[1]) ** 2) / (2 * sigma**2)).astype(np.float32)
    box = Letterbox.fit(width, height, 128, 96)
    small = box.apply(plane, interpolation=cv2.INTER_LINEAR)
    (found,), _ = decode_peaks(small[None])
    back = box.to_original(found)[0]
    scale = width / box.scaled_width
    assert np.linalg.norm(back - truth) <= max(1.0, 0.5 * scale)


def test_mask_survives_the_round_trip():
    mask = np.zeros((300, 900), np.float32)
    cv2.ellipse(mask, (450, 150), (300, 90), 10, 0, 360, 1.0, -1)
    box = Letterbox.fit(900, 300, 128, 96)
    back = box.map_back(box.apply(mask, interpolation=cv2.INTER_AREA)) > 0.5
    assert mask_iou(back, mask > 0.5) > 0.97


def test_heatmap_peaks_decode_to_sub_pixel_positions():
    points = np.array([[10.3, 20.7], [40.0, 5.5], [63.0, 47.0]])
    maps = gaussian_targets(points, np.array([True, True, True]), 48, 64, sigma=2.0)
    decoded, confidence = decode_peaks(maps)
    assert np.abs(decoded[:2] - points[:2]).max() < 0.05
    assert np.abs(decoded[2] - points[2]).max() < 0.6  # on the border: no neighbour, integer peak
    assert np.all(confidence > 0.9)
    empty = gaussian_targets(points, np.array([False, True, True]), 48, 64, sigma=2.0)
    assert empty[0].max() == 0


def test_box_fusion_falls_back_step_by_step():
    rgb = np.full((100, 200, 3), 90, np.uint8)
    mask = np.zeros((100, 200), bool)
    mask[40:60, 50:150] = True
    points = np.array([[45.0, 42.0], [100.0, 58.0], [160.0, 41.0]])  # the right tip pokes out of the mask
    confident = np.array([0.9, 0.9, 0.9])
    params = BoxSettings(min_mask_score=0.6, min_keypoint_confidence=0.3, min_area_fraction=0.01)
    fused = fuse_box(mask, 0.9, points, confident, rgb, params)
    assert fused.method == "mask+keypoints" and (fused.x0, fused.y0, fused.x1, fused.y1) == (45, 40, 161, 60)
    assert fuse_box(mask, 0.9, points, confident * 0, rgb, params).method == "mask"
    from_points = fuse_box(mask, 0.2, points, confident, rgb, params)
    assert from_points.method == "keypoints"
    # 1.2 x the keypoint box about its centre.
    assert from_points.x1 - from_points.x0 == pytest.approx(1.2 * 115 + 1, abs=2)
    fallback = fuse_box(mask, 0.2, points, confident * 0, rgb, params)
    assert fallback.method in ("threshold", "whole_image")


def test_detection_metrics_by_hand():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:, :2] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    truth = np.array([[0.0, 0.0], [50.0, 5.0], [100.0, 0.0]])
    span = fluke_span(truth, NAMES)
    assert span == 100.0
    pred = truth + np.array([[4.0, 0.0], [0.0, 9.0], [20.0, 0.0]])
    assert pck(pred, truth, span, 0.05) == (1, 3)
    assert pck(pred, truth, span, 0.1) == (2, 3)
    truth[1] = np.nan  # unlabelled points do not count
    assert pck(pred, truth, span, 0.1) == (1, 2)


def test_loss_ignores_unannotated_channels():
    logits = torch.zeros(2, 4, 8, 8)
    target = torch.zeros(2, 4, 8, 8)
    target[:, 0, 2:6, 2:6] = 1
    no_annotation = torch.zeros(2, 4, 1, 1)
    weights = torch.ones(2, 4, 1, 1)
    assert detector_loss(logits, target, no_annotation).item() == pytest.approx(0.0, abs=1e-6)
    assert detector_loss(logits, target, weights).item() > 0.5
    better = logits.clone()
    better[:, 0] = (target[:, 0] * 2 - 1) * 5
    assert detector_loss(better, target, weights) < detector_loss(logits, target, weights)


def _toy_dataset(tmp_path, n=8):
    """n fluke photos with masks and keypoints: (train, keypoints)."""
    train, keypoints, _ = annotated_photos(tmp_path, n, shape=fluke, seed=0, prefix="img")
    return train, keypoints


def test_training_resumes_from_its_checkpoint_and_predicts_every_image(tmp_path, monkeypatch):
    train, keypoints = _toy_dataset(tmp_path)
    model_path = tmp_path / "det.safetensors"
    # Kill the run after the first epoch's checkpoint.
    original = detect_train.save_training_state

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(detect_train, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_detector(train, keypoints, PARAMS, 0, model_path, tmp_path / "h.csv")
    monkeypatch.setattr(detect_train, "save_training_state", original)
    assert not model_path.exists() and (tmp_path / "det.safetensors.checkpoint.pt").exists()
    meta = train_detector(train, keypoints, PARAMS, 0, model_path, tmp_path / "h.csv")
    history = pd.read_csv(tmp_path / "h.csv")
    assert history["epoch"].tolist() == [1, 2] and not (tmp_path / "det.safetensors.checkpoint.pt").exists()
    assert len(meta["holdout"]) >= 1

    test = train.iloc[:2].assign(split="test")
    masks, kps, boxes = predict_all(model_path, train, test, {}, tmp_path / "masks")
    assert len(masks) == len(boxes) == len(train) + 2 and len(kps) == 3 * (len(train) + 2)
    for row in masks.itertuples():
        image = cv2.imread(train.set_index("image").loc[row.image, "path"])
        assert cv2.imread(row.mask_path, cv2.IMREAD_GRAYSCALE).shape == image.shape[:2]
    assert kps["confidence"].between(0, 1).all()
    assert set(boxes["method"]) <= {"mask+keypoints", "mask", "keypoints", "threshold", "whole_image"}
    # Through the per-photo cache: the first pass fills it, the second reads every photo from it;
    # both give the tables and mask files of the pass without a cache.
    with_sha1 = [
        df.assign(sha1=[f"sha{i}" for i in range(len(df))]) for df in (train, test.assign(image="t" + test["image"]))
    ]
    first = predict_all(model_path, *with_sha1, {}, tmp_path / "m1", cache_dir=tmp_path / "cache")
    second = predict_all(model_path, *with_sha1, {}, tmp_path / "m2", cache_dir=tmp_path / "cache")
    assert len(stored_keys(tmp_path / "cache")) == len(train)  # the test photos share their sha1
    for a, b, plain in zip(first, second, (masks, kps, boxes)):
        a, b = (t.drop(columns=["image", "mask_path"], errors="ignore") for t in (a, b))
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(a, plain.drop(columns=["image", "mask_path"], errors="ignore"))
    for one, two in zip(first[0]["mask_path"], second[0]["mask_path"]):
        assert Path(one).read_bytes() == Path(two).read_bytes()
    # Entries written before the mask's area was kept: read (the area from the mask) and stored
    # again with it, so the next run does not decode every mask.
    old = tmp_path / "old_cache"
    cache = PhotoCache(tmp_path / "cache", "any")
    with PhotoCache(old, "any") as rewrite:
        for key in stored_keys(tmp_path / "cache"):
            entry = cache.get(key)
            del entry["area"]
            rewrite.put(key, **entry)
    third = predict_all(model_path, *with_sha1, {}, tmp_path / "m3", cache_dir=old)
    pd.testing.assert_frame_equal(third[0].drop(columns="mask_path"), second[0].drop(columns="mask_path"))
    upgraded = PhotoCache(old, "any")
    assert all("area" in upgraded.get(key) for key in stored_keys(old))


def test_encoder_weights_load_from_a_local_file_and_missing_files_are_named(tmp_path):
    source = build_detector(PARAMS)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.encoder.state_dict().items()}, str(path))
    loaded = build_detector(dict(PARAMS, encoder_weights=str(path)))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
    with pytest.raises(InputError, match="nowhere.pt"):
        build_detector(dict(PARAMS, encoder_weights=str(tmp_path / "nowhere.pt")))


def test_training_without_annotations_says_what_to_do(tmp_path):
    train, keypoints = _toy_dataset(tmp_path, n=2)
    train["mask_path"] = None
    with pytest.raises(InputError, match="detect.method: threshold"):
        train_detector(train, keypoints.iloc[0:0], PARAMS, 0, tmp_path / "m.safetensors", tmp_path / "h.csv")


def test_csv_by_image_is_the_text_of_each_images_rows_in_their_order():
    from flukeline.detect.train import csv_by_image

    rows = pd.DataFrame(
        {
            "image": ["b.jpg", "a.jpg", "b.jpg", "c.jpg", "a.jpg"],
            "x0": [1.5, 2.0, 0.1 + 0.2, 7.0, 1e-9],
            "keypoint": ["notch", "tip", "tip", "notch", "notch"],
            "n": [1, 2, 3, 4, 5],
        }
    )
    # What a per-image groupby and to_csv gives (the training items of stored detectors were
    # written with it: another text would retrain them).
    by_group = {
        image: part.drop(columns="image").to_csv(index=False, header=False) for image, part in rows.groupby("image")
    }
    assert csv_by_image(rows) == by_group
    assert csv_by_image(rows)["b.jpg"] == "1.5,notch,1\n0.30000000000000004,tip,3\n"
    assert csv_by_image(rows.iloc[:0]) == {}
