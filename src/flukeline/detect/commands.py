"""Detect stage commands (workflow/rules/detect.smk): the classical detector, or the U-Net's
training, prediction and evaluation. The runners are imported inside the commands (torch)."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_params, add_required, add_seed, add_threads, add_train_test


def cmd_detect(args):
    from flukeline.detect.threshold import run

    run(
        train_path=args.train,
        test_path=args.test,
        out_path=args.out,
        params=args.params,
        threads=args.threads,
        keypoints_out=args.keypoints_out,
        masks_out=args.masks_out,
    )


def cmd_detect_train(args):
    from flukeline.detect.train import run_train

    run_train(
        train_path=args.train,
        keypoints_path=args.keypoints,
        params=args.params,
        seed=args.seed,
        model_path=args.model,
        history_path=args.history,
        threads=args.threads,
    )


def cmd_detect_predict(args):
    from flukeline.detect.predict import run_predict

    run_predict(
        model_path=args.model,
        train_path=args.train,
        test_path=args.test,
        params=args.params,
        masks_dir=args.masks_dir,
        masks_out=args.masks,
        keypoints_out=args.keypoints,
        boxes_out=args.boxes,
        threads=args.threads,
    )


def cmd_detect_evaluate(args):
    from flukeline.detect.evaluate import run_evaluate

    run_evaluate(
        model_path=args.model,
        train_path=args.train,
        gt_keypoints_path=args.gt_keypoints,
        gt_boxes_path=args.gt_boxes,
        masks_path=args.masks,
        keypoints_path=args.keypoints,
        boxes_path=args.boxes,
        metrics_out=args.metrics,
        overlays_out=args.overlays,
    )


def register(subparsers) -> None:
    p = add_command(
        subparsers, "detect", cmd_detect, "classical detection (detect.method threshold or none): one box per image"
    )
    add_train_test(p)
    add_params(p)  # before the outputs, as in detect-predict
    p.add_argument("--out", required=True, help="boxes.parquet")
    p.add_argument("--keypoints-out", default=None, help="keypoints.parquet (empty: no landmarks)")
    p.add_argument("--masks-out", default=None, help="masks.parquet (empty: no masks)")
    add_threads(p)

    p = add_command(
        subparsers,
        "detect-train",
        cmd_detect_train,
        "train the U-Net mask + keypoint-heatmap detector on annotated images",
    )
    p.add_argument("--train", required=True)
    p.add_argument("--keypoints", required=True, help="annotation keypoints from ingest")
    add_params(p, "detect.model settings plus detect.keypoints (JSON)", required=True)
    add_seed(p)
    add_required(p, "--model", "--history")
    add_threads(p)

    p = add_command(
        subparsers,
        "detect-predict",
        cmd_detect_predict,
        "masks, keypoints and boxes of every image with the trained detector",
    )
    add_required(p, "--model", "--train", "--test")
    add_params(p, "detect.boxes settings (JSON)")
    add_required(p, "--masks-dir", "--masks", "--keypoints", "--boxes")
    add_threads(p)

    p = add_command(
        subparsers,
        "detect-evaluate",
        cmd_detect_evaluate,
        "mask IoU, box IoU and PCK on held-out annotated images; overlays",
    )
    add_required(
        p,
        "--model",
        "--train",
        "--gt-keypoints",
        "--gt-boxes",
        "--masks",
        "--keypoints",
        "--boxes",
        "--metrics",
        "--overlays",
    )
