"""Align stage speed: images per second of the transform step and of the crop step per size.

The inputs are a demo run's ingest tables with ground-truth keypoints, boxes and masks in detect's
format (the alignment work is the same whatever produced them). Without --data a small demo is
rendered and ingested into a temporary folder first.

Usage: .venv/bin/python bench/bench_align.py [--data results/data] [--sizes 128x64 512x256]
                                             [--workers 1 2] [--n-train 600]
Target (issue 5): alignment is no bottleneck of the DAG: cheap geometry, parallel over images.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.align.crops import crop_images
from flukeline.align.settings import AlignSettings
from flukeline.align.transforms import estimate_transforms, image_table


def demo_tables(data_dir: Path, limit: int | None):
    """Images, and keypoints/boxes/masks in detect's table format, from ingest's ground truth."""
    train, test = pd.read_parquet(data_dir / "train.parquet"), pd.read_parquet(data_dir / "test.parquet")
    images = image_table(train, test)
    if limit:
        images = images.iloc[:limit]
    split = images[["image", "split"]]
    keypoints = pd.read_parquet(data_dir / "keypoints.parquet").merge(split, on="image")
    keypoints["confidence"] = keypoints["visible"].astype(float)
    keypoints = keypoints[["image", "split", "keypoint", "x", "y", "confidence"]]
    boxes = pd.read_parquet(data_dir / "boxes.parquet").merge(split, on="image")
    boxes = boxes.assign(
        x0=np.floor(boxes["x0"]).astype(int),
        y0=np.floor(boxes["y0"]).astype(int),
        x1=np.ceil(boxes["x1"]).astype(int),
        y1=np.ceil(boxes["y1"]).astype(int),
        method="truth",
        score=1.0,
    )
    masks = pd.concat([train, test])[["image", "split", "mask_path"]].merge(split, on=["image", "split"])
    masks = masks.assign(area=1, score=1.0)
    return images, keypoints, boxes, masks


def render_demo(tmp: Path, n_train: int, seed: int) -> Path:
    from flukeline.data.demo.generate import generate_demo
    from flukeline.data.ingest import ingest

    root = tmp / "kaggle"
    generate_demo(
        root,
        tmp / "truth.csv",
        preset="demo",
        seed=seed,
        workers=2,
        overrides={"n_train": n_train, "n_test": max(1, n_train // 3)},
    )
    data = tmp / "data"
    ingest(
        root,
        data / "train.parquet",
        data / "test.parquet",
        data / "rejected.csv",
        annotations={
            "masks": "annotations/masks",
            "keypoints": "annotations/keypoints.csv",
            "boxes": "annotations/boxes.csv",
        },
        threads=2,
    )
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a run's results/data (default: render a demo)")
    parser.add_argument("--sizes", nargs="+", default=["128x64", "512x256"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    parser.add_argument("--n-train", type=int, default=600, help="rendered demo: train images (test: a third)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data if args.data is not None else render_demo(tmp, args.n_train, args.seed)
        images, keypoints, boxes, masks = demo_tables(data, args.limit)
        settings = AlignSettings.from_params({})
        start = time.perf_counter()
        transforms = estimate_transforms(images, keypoints, boxes, settings)
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "step": "transforms",
                    "workers": 1,
                    "images": len(images),
                    "seconds": round(seconds, 2),
                    "images_per_s": round(len(images) / seconds, 1),
                    "landmark_share": round(float((transforms["method"] == "landmarks").mean()), 3),
                }
            ),
            flush=True,
        )
        for size in args.sizes:
            for workers in args.workers:
                out = tmp / f"crops_{size}_{workers}"
                start, cpu = time.perf_counter(), time.process_time()
                crop_images(images, transforms, masks, size, 0.1, out, threads=workers)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                # Each image: aligned + box crop, and both warped masks (4 PNGs).
                row = {
                    "step": "crops",
                    "size": size,
                    "workers": workers,
                    "images": len(images),
                    "seconds": round(seconds, 2),
                    "images_per_s": round(len(images) / seconds, 1),
                }
                if workers == 1:
                    # CPU time of the in-process run: what an idle core would need, whatever else runs.
                    row["cpu_ms_per_image"] = round(1000 * cpu / len(images), 2)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
