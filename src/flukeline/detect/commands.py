"""Detect stage commands (workflow/rules/detect.smk): the classical detector, or the U-Net's
training, prediction and evaluation. The runners are imported inside the commands (torch)."""

from __future__ import annotations

from flukeline.core.cli_args import (
    add_cache,
    add_command,
    add_model_store,
    add_option,
    add_params,
    add_required,
    add_seed,
    add_threads,
    add_train_test,
)


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "detect",
        "flukeline.detect.threshold:run",
        "classical detection (detect.method threshold or none): one box per image",
    )
    add_train_test(p)
    add_params(p)  # before the outputs, as in detect-predict
    add_option(p, "--out", "out_path", required=True, help="boxes.parquet")
    p.add_argument("--keypoints-out", default=None, help="keypoints.parquet (empty: no landmarks)")
    p.add_argument("--masks-out", default=None, help="masks.parquet (empty: no masks)")
    add_cache(p)
    add_threads(p)

    p = add_command(
        subparsers,
        "detect-train",
        "flukeline.detect.train:run_train",
        "train the U-Net mask + keypoint-heatmap detector on annotated images (masks, boxes, keypoints)",
    )
    add_required(p, train_path="--train")
    add_option(p, "--keypoints", "keypoints_path", required=True, help="annotation keypoints from ingest")
    add_option(p, "--boxes", "boxes_path", default=None, help="annotation boxes from ingest (boxes.parquet)")
    add_params(p, "detect.model settings plus detect.keypoints (JSON)", required=True)
    add_seed(p)
    add_required(p, model_path="--model", history_path="--history")
    add_model_store(p)
    add_threads(p)

    predict = "masks, keypoints and boxes of every image with the trained detector"
    p = add_command(subparsers, "detect-predict", "flukeline.detect.predict:run_predict", predict)
    add_required(p, model_path="--model", train_path="--train", test_path="--test")
    add_params(p, "detect.boxes settings (JSON)")
    add_required(p, "--masks-dir", masks_out="--masks", keypoints_out="--keypoints", boxes_out="--boxes")
    add_cache(p)
    add_threads(p)

    p = add_command(
        subparsers,
        "detect-evaluate",
        "flukeline.detect.evaluate:run_evaluate",
        "mask IoU, box IoU and PCK on held-out annotated images; overlays",
    )
    add_required(
        p,
        model_path="--model",
        train_path="--train",
        gt_keypoints_path="--gt-keypoints",
        gt_boxes_path="--gt-boxes",
        masks_path="--masks",
        keypoints_path="--keypoints",
        boxes_path="--boxes",
        metrics_out="--metrics",
        overlays_out="--overlays",
    )
    add_threads(p)
