"""Detection inference speed: images/s through the learned detector (letterbox, U-Net, mask
map-back, keypoint decoding, box fusion, mask PNG) at demo resolution.

Usage: .venv/bin/python bench/bench_detect.py [--threads 2] [--images 300] [--model results/detect/model.safetensors]
Without --model a detector with the config's architecture and random weights is timed (the
speed does not depend on the weights).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from flukeline.core.weights import save_weights
from flukeline.data.demo.generate import generate_demo
from flukeline.detect.predict import predict_all
from flukeline.detect.unet import WEIGHTS_KEY, build_detector

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config.yaml").read_text())["detect"]
    params = {**config["model"], "keypoints": config["keypoints"]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_demo(
            tmp / "kaggle",
            tmp / "truth.csv",
            preset=args.preset,
            seed=0,
            workers=args.threads,
            overrides={"n_train": args.images, "n_test": 1},
        )
        train = pd.read_csv(tmp / "kaggle/train.csv")
        frame = pd.DataFrame(
            {
                "image": train["Image"],
                "split": "train",
                "path": [str(tmp / "kaggle/train" / name) for name in train["Image"]],
            }
        )
        model_path = args.model
        if model_path is None:
            model_path = tmp / "random.safetensors"
            save_weights(build_detector(params), model_path, {"params": params, "holdout": []}, key=WEIGHTS_KEY)
        started = time.perf_counter()
        masks, _, boxes = predict_all(
            model_path, frame, frame.iloc[0:0], config["boxes"], tmp / "masks", threads=args.threads
        )
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "images": len(masks),
                "threads": args.threads,
                "seconds": round(seconds, 2),
                "images_per_s": round(len(masks) / seconds, 1),
                "input_size": params["input_size"],
                "encoder": params["encoder"],
            }
        )
    )


if __name__ == "__main__":
    main()
