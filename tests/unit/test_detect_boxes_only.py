"""The learned detector from boxes alone (no masks, no keypoints) and from mixed annotations: the
box targets, the loss weights, a tiny training run, its metrics, and align's box-crop fallback."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers_annotated import NAMES, annotated_photos, notched_block, tiny_detector

from flukeline.align.settings import AlignSettings
from flukeline.align.transforms import estimate_transforms
from flukeline.core.model_file import read_weights
from flukeline.detect.evaluate import evaluate_detection, run_evaluate
from flukeline.detect.examples import annotated_images, box_region
from flukeline.detect.letterbox import Letterbox
from flukeline.detect.predict import predict_all
from flukeline.detect.train import detector_loss, train_detector
from flukeline.detect.unet import WEIGHTS_KEY

PARAMS = tiny_detector()
NO_KEYPOINTS = pd.DataFrame({"image": [], "keypoint": [], "x": [], "y": [], "visible": []})


def _photos(tmp_path, n=8, with_masks=False):
    """Bright rectangles-with-a-notch on a dark ground; boxes (exclusive ends) are their extent."""
    train, _, boxes = annotated_photos(tmp_path, n, shape=notched_block, seed=1, prefix="p", masks=with_masks)
    return train, boxes


def test_box_region_fills_the_pixels_whose_centres_are_inside():
    box = Letterbox.fit(200, 100, 100, 50)  # scale 0.5, no padding
    region = box_region(box, np.array([[20.0, 10.0, 60.0, 30.0]]))
    ys, xs = np.nonzero(region)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (10, 30, 5, 15)
    # Several boxes: their union; a box thinner than an input pixel still marks one pixel.
    two = box_region(box, np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 50.0, 101.0, 51.0]]))
    assert two[:5, :5].all() and two[25, 50] == 1 and two.sum() == 26
    padded = Letterbox.fit(100, 100, 100, 50)  # scale 0.5, 25 px of padding left and right
    ys, xs = np.nonzero(box_region(padded, np.array([[0.0, 0.0, 100.0, 100.0]])))
    assert (xs.min(), xs.max()) == (25, 74) and (ys.min(), ys.max()) == (0, 49)


def test_boxes_alone_make_images_annotated():
    train = pd.DataFrame({"image": ["a", "b", "c"], "mask_path": [None, None, None]})
    boxes = pd.DataFrame({"image": ["b"], "x0": [0.0], "y0": [0.0], "x1": [4.0], "y1": [4.0]})
    assert annotated_images(train, NO_KEYPOINTS, NAMES).empty
    assert annotated_images(train, NO_KEYPOINTS, NAMES, boxes)["image"].tolist() == ["b"]


def test_pixel_weights_limit_the_mask_loss_to_the_pixels_a_box_is_sure_of():
    logits = torch.zeros(1, 2, 8, 8)
    target = torch.zeros(1, 2, 8, 8)
    no_dice = torch.zeros(1, 2, 1, 1)  # no mask: the Dice term must not count
    outside = torch.ones(1, 1, 8, 8)
    outside[:, :, 2:6, 2:6] = 0
    base = detector_loss(logits, target, no_dice, mask_pixels=outside).item()
    assert base == pytest.approx(np.log(2), rel=1e-4)  # BCE of logit 0 against 0 on the outside pixels
    # What the network predicts inside the box is not penalised, outside it is.
    inside_on = logits.clone()
    inside_on[:, 0, 2:6, 2:6] = 8
    assert detector_loss(inside_on, target, no_dice, mask_pixels=outside).item() == pytest.approx(base, rel=1e-4)
    outside_on = logits.clone()
    outside_on[:, 0, 0, :] = 8
    assert detector_loss(outside_on, target, no_dice, mask_pixels=outside).item() > base + 0.5


def test_boxes_only_training_gives_box_iou_and_no_pck_and_align_makes_box_crops(tmp_path):
    train, boxes = _photos(tmp_path)
    model_path = tmp_path / "det.safetensors"
    meta = train_detector(train, NO_KEYPOINTS, PARAMS, 0, model_path, tmp_path / "h.csv", boxes=boxes)
    assert model_path.exists() and pd.read_csv(tmp_path / "h.csv")["epoch"].tolist() == [1, 2]
    assert meta["mask_target"] == "box" and meta["n_train_boxes"] == meta["n_train"] > 0
    assert meta["keypoint_labels"] == dict.fromkeys(NAMES, 0) and len(meta["holdout"]) >= 1
    _, saved = read_weights(model_path, key=WEIGHTS_KEY, tensors=False)
    assert saved["mask_target"] == "box"

    masks, keypoints, predicted = predict_all(model_path, train, train.iloc[0:0], {}, tmp_path / "masks")
    assert len(predicted) == len(train) and len(keypoints) == 3 * len(train)
    # No keypoint was ever labelled: no heatmap is trusted.
    assert (keypoints["confidence"] == 0).all()

    paths = {}
    for name, table in {"train": train, "gt_kp": NO_KEYPOINTS, "gt_boxes": boxes, "masks": masks}.items():
        paths[name] = tmp_path / f"{name}.parquet"
        table.to_parquet(paths[name])
    keypoints.to_parquet(tmp_path / "kp.parquet")
    predicted.to_parquet(tmp_path / "boxes.parquet")
    run_evaluate(
        model_path,
        paths["train"],
        paths["gt_kp"],
        paths["gt_boxes"],
        paths["masks"],
        tmp_path / "kp.parquet",
        tmp_path / "boxes.parquet",
        tmp_path / "metrics.json",
        tmp_path / "overlays.png",
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_holdout"] == len(meta["holdout"]) == metrics["n_box_iou"]
    assert 0.0 <= metrics["box_iou"] <= 1.0
    assert metrics["mask_iou"] is None and metrics["pck@0.05"] is None and metrics["pck@0.1"] is None
    assert metrics["pck_keypoints"] == [] and metrics["mask_target"] == "box"
    assert (tmp_path / "overlays.png").stat().st_size > 0

    # Align gets no usable landmark, so every image falls back to its box crop.
    images = train.assign(width=[cv2.imread(p).shape[1] for p in train["path"]])
    images["height"] = [cv2.imread(p).shape[0] for p in train["path"]]
    table = estimate_transforms(images, keypoints, predicted, AlignSettings.from_params({}))
    assert (table["method"] == "box").all() and (table["reason"] == "few_landmarks").all()
    assert (table["n_landmarks"] == 0).all()


def test_masks_beside_boxes_keep_the_mask_target(tmp_path):
    train, boxes = _photos(tmp_path, n=8, with_masks=True)
    train.loc[:3, "mask_path"] = None  # half the photos have only their box
    meta = train_detector(
        train, NO_KEYPOINTS, dict(PARAMS, epochs=1), 0, tmp_path / "m.safetensors", tmp_path / "h.csv", boxes=boxes
    )
    assert meta["mask_target"] == "mask" and 0 < meta["n_train_masks"] < meta["n_train"]


def test_box_iou_uses_exclusive_ends_and_the_best_of_several_truth_boxes(tmp_path):
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros((10, 10), np.uint8))
    train = pd.DataFrame({"image": ["a"], "path": ["a.jpg"], "split": ["train"], "mask_path": [None]})
    truth = pd.DataFrame(
        {"image": ["a", "a"], "x0": [0.0, 50.0], "y0": [0.0, 0.0], "x1": [10.0, 60.0], "y1": [10.0, 10.0]}
    )
    predicted = pd.DataFrame({"image": ["a"], "x0": [50], "y0": [0], "x1": [60], "y1": [10], "method": ["mask"]})
    masks = pd.DataFrame({"image": ["a"], "mask_path": [str(tmp_path / "m.png")]})
    kp = pd.DataFrame({"image": [], "keypoint": [], "x": [], "y": [], "confidence": []})
    metrics = evaluate_detection(train, NO_KEYPOINTS, truth, masks, kp, predicted, ["a"], NAMES, "box", [])
    assert metrics["box_iou"] == pytest.approx(1.0) and metrics["mask_iou"] is None


def test_mask_iou_of_held_out_files_is_the_mean_over_photos_on_threads(tmp_path):
    truth, pred = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    truth[:10], pred[:5] = 255, 255  # IoU 0.5
    rows = []
    for image, predicted in (("a", pred), ("b", truth), ("c", pred)):  # 0.5, 1.0, 0.5
        cv2.imwrite(str(tmp_path / f"t_{image}.png"), truth)
        cv2.imwrite(str(tmp_path / f"p_{image}.png"), predicted)
        rows.append(image)
    train = pd.DataFrame(
        {"image": rows, "path": "x.jpg", "split": "train", "mask_path": [str(tmp_path / f"t_{i}.png") for i in rows]}
    )
    masks = pd.DataFrame({"image": rows, "mask_path": [str(tmp_path / f"p_{i}.png") for i in rows]})
    predicted = pd.DataFrame({"image": rows, "x0": 0, "y0": 0, "x1": 20, "y1": 10, "method": "mask"})
    kp = pd.DataFrame({"image": [], "keypoint": [], "x": [], "y": [], "confidence": []})
    no_boxes = pd.DataFrame({"image": [], "x0": [], "y0": [], "x1": [], "y1": []})
    for threads in (1, 2):
        metrics = evaluate_detection(
            train, NO_KEYPOINTS, no_boxes, masks, kp, predicted, rows[:2], NAMES, threads=threads
        )
        assert metrics["n_mask_iou"] == 2 and metrics["mask_iou"] == pytest.approx(0.75)  # c is not held out
