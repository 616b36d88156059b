"""Detection benchmarks.

Speed (default): images/s through the learned detector (letterbox, U-Net, mask map-back, keypoint
decoding, box fusion, mask PNG) at demo resolution. Without --model a detector with the config's
architecture and random weights is timed (the speed does not depend on the weights).

Annotation budget (--compare-annotations KAGGLE_ROOT, also part `detector` of `python -m bench`):
the detector trained on every annotation of up to detect.model.max_train_images demo photos
(masks, keypoints, boxes: 400 with config.yaml) against one trained on 100 photos annotated the way
`flukeline annotate` exports them (boxes.csv + keypoints.csv with `visible`, no masks), and on
the boxes of those 100 alone. The 100 are the page's own choice (flukeline.annotate.page
select_photos) among the photos the full run trains on, written in the page's format and read
back through data.annotations; all variants are scored on the same held-out photos (the full run's
holdout) against the demo's complete truth: PCK@0.05/0.1, box IoU, mask IoU (only for a model
whose mask channel learned masks), and training wall time.

Usage: .venv/bin/python bench/bench_detect.py [--threads 2] [--images 300] [--model results/detect/model.safetensors]
       .venv/bin/python bench/bench_detect.py --compare-annotations resources/demo/demo-seed0/kaggle [--out a.json]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from flukeline.annotate.page import select_photos, train_from_root
from flukeline.core.model_file import save_weights
from flukeline.data.annotations import load_annotations
from flukeline.data.demo.generate import generate_demo
from flukeline.detect.evaluate import evaluate_detection, keypoints_trained
from flukeline.detect.examples import annotated_images, holdout_split
from flukeline.detect.predict import predict_all
from flukeline.detect.train import train_detector
from flukeline.detect.unet import WEIGHTS_KEY, build_detector

REPO = Path(__file__).resolve().parents[1]

# Variant -> (what it trains on, in words). "all": the demo's full annotations; "annotate": the
# page's export of N photos; "+boxes": that export's boxes.csv alone.
ANNOTATION_VARIANTS = ("all", "annotate", "annotate_boxes")
ANNOTATION_METRICS = ("box_iou", "mask_iou", "pck@0.05", "pck@0.1", "n_holdout", "mask_target")


def _demo_annotations(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The demo folder's train photos (image, path, id, split, mask_path) and its keypoint and box
    annotations of train photos, read by data.annotations as ingest reads them."""
    train = train_from_root(root).assign(split="train")
    listed = set(train["image"]) | {p.name for p in (root / "test").iterdir()}
    masks_dir, tables = load_annotations(
        root,
        {"masks": "annotations/masks", "keypoints": "annotations/keypoints.csv", "boxes": "annotations/boxes.csv"},
        listed,
    )
    masks = {p.stem: str(p) for p in masks_dir.glob("*.png")}
    train["mask_path"] = pd.Series([masks.get(Path(name).stem) for name in train["image"]], dtype=object)
    keep = set(train["image"])
    keypoints, boxes = (tables[k][tables[k]["image"].isin(keep)].reset_index(drop=True) for k in ("keypoints", "boxes"))
    return train, keypoints, boxes


def export_like_the_annotate_page(chosen, keypoints, boxes, folder: Path, names) -> None:
    """boxes.csv and keypoints.csv of the chosen photos as the annotate page's export buttons write
    them: values rounded to 0.01 px, an invisible keypoint with empty x and y and visible 0."""
    folder.mkdir(parents=True, exist_ok=True)
    picked = set(chosen["image"])
    b = boxes[boxes["image"].isin(picked)]
    pd.DataFrame({"Image": b["image"], **{c: b[c].round(2) for c in ("x0", "y0", "x1", "y1")}}).to_csv(
        folder / "boxes.csv", index=False
    )
    k = keypoints[keypoints["image"].isin(picked) & keypoints["keypoint"].isin(names)]
    visible = k["visible"].astype(bool)
    pd.DataFrame(
        {
            "Image": k["image"],
            "keypoint": k["keypoint"],
            "x": np.where(visible, k["x"].round(2).astype(str), ""),
            "y": np.where(visible, k["y"].round(2).astype(str), ""),
            "visible": visible.astype(int),
        }
    ).to_csv(folder / "keypoints.csv", index=False)


def compare_annotations(
    root, params: dict, box_params: dict, seed: int, workdir, threads: int = 2, n_annotated: int = 100
) -> dict:
    """Per variant (ANNOTATION_VARIANTS): what it trained on, its training wall time and its
    held-out metrics, all on the same held-out photos (see the module docstring)."""
    root, workdir = Path(root), Path(workdir)
    names = list(params["keypoints"])
    train, keypoints, boxes = _demo_annotations(root)
    annotated = annotated_images(train, keypoints, names, boxes)
    held_flags = holdout_split(annotated["image"], float(params.get("holdout_fraction", 0.1)), seed)
    held = sorted(annotated.loc[held_flags, "image"])
    chosen = select_photos(annotated[~held_flags], n_annotated, seed)
    export_like_the_annotate_page(chosen, keypoints, boxes, workdir / "annotate", names)
    listed = set(train["image"])
    _, exported = load_annotations(workdir / "annotate", {"boxes": "boxes.csv", "keypoints": "keypoints.csv"}, listed)
    no_masks = train.assign(mask_path=None)
    empty_kp = exported["keypoints"].iloc[0:0]
    inputs = {
        "all": (train, keypoints, boxes, params),
        # All of the page's photos train (it has no holdout of its own: the full run's is used).
        "annotate": (no_masks, exported["keypoints"], exported["boxes"], dict(params, holdout_fraction=0.0)),
        "annotate_boxes": (no_masks, empty_kp, exported["boxes"], dict(params, holdout_fraction=0.0)),
    }
    held_frame = train[train["image"].isin(set(held))].reset_index(drop=True)
    rows = {}
    for name in ANNOTATION_VARIANTS:
        frame, kp, bx, variant_params = inputs[name]
        model_path = workdir / name / "model.safetensors"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.unlink(missing_ok=True)  # a stale model would be resumed from or reported
        started = time.perf_counter()
        meta = train_detector(frame, kp, variant_params, seed, model_path, model_path.with_suffix(".csv"), threads, bx)
        train_s = time.perf_counter() - started
        if name == "all" and sorted(meta["holdout"]) != held:
            raise RuntimeError("the full run held out other photos than the comparison scores on")
        if name != "all" and set(meta["holdout"]) | (set(held) & set(chosen["image"])):
            raise RuntimeError("an annotate-page variant held photos out or trained on a held-out one")
        masks, kps, predicted = predict_all(
            model_path, held_frame, held_frame.iloc[0:0], box_params, workdir / name / "masks", threads
        )
        metrics = evaluate_detection(
            held_frame, keypoints, boxes, masks, kps, predicted, held, names,
            meta["mask_target"], keypoints_trained(meta, names),
        )  # fmt: skip
        rows[name] = {
            "n_train": meta["n_train"],
            "n_train_masks": meta["n_train_masks"],
            "n_train_boxes": meta["n_train_boxes"],
            "keypoints_labelled": sum(meta["keypoint_labels"].values()),
            "train_wall_s": round(train_s, 1),
            **{k: metrics[k] for k in ANNOTATION_METRICS},
            "box_methods": metrics["box_methods"],
        }
        print(f"detector {name}: {json.dumps(rows[name])}", flush=True)
    return {
        "held_out": len(held),
        "annotated_photos": n_annotated,
        "recipe": {k: params.get(k) for k in ("encoder", "input_size", "epochs", "batch_size", "max_train_images")},
        "rows": rows,
    }


def annotations_markdown(result: dict) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    header = ["trained on", "photos", "masks", "mask target", "box IoU", "mask IoU", "PCK@0.05", "PCK@0.1", "train s"]
    label = {
        "all": "all demo annotations",
        "annotate": f"{result['annotated_photos']} annotate-page exports (boxes + keypoints)",
        "annotate_boxes": f"{result['annotated_photos']} annotate-page boxes only",
    }
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in result["rows"].items():
        values = [label[name], r["n_train"], r["n_train_masks"], r["mask_target"], r["box_iou"], r["mask_iou"]]
        values += [r["pck@0.05"], r["pck@0.1"], r["train_wall_s"]]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return (
        "\n".join(lines)
        + f"\n\nAll scored on the same {result['held_out']} held-out demo photos against their full truth; "
        f"recipe {result['recipe']}. Mask IoU only for a model whose mask channel learned masks "
        "(trained from boxes, it learns box regions). PCK over the keypoints the variant was trained on.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--model", default=None)
    parser.add_argument("--compare-annotations", metavar="KAGGLE_ROOT", default=None)
    parser.add_argument("--annotated", type=int, default=100, help="photos of the annotate-page variants")
    parser.add_argument("--workdir", default=None, help="where the comparison's models go (default: a temp dir)")
    parser.add_argument("--out", default=None, help="also write the comparison as JSON")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if args.compare_annotations:
        params = {**config["detect"]["model"], "keypoints": config["detect"]["keypoints"]}
        box_params = {**config["detect"]["boxes"], "min_area_fraction": config["detect"]["min_area_fraction"]}
        with tempfile.TemporaryDirectory() as tmp:
            result = compare_annotations(
                args.compare_annotations,
                params,
                box_params,
                int(config["seed"]),
                args.workdir or tmp,
                args.threads,
                args.annotated,
            )
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        print(annotations_markdown(result))
        return
    speed(args, config["detect"])


def speed(args, config: dict) -> None:
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
