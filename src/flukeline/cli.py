"""Command-line entry point: `flukeline <command>` (or `python -m flukeline`). The Snakemake
rules call these commands; each one loads its inputs, calls one function of the package and
writes its outputs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from flukeline.core.errors import InputError
from flukeline.core.runtime import setup_logging

log = logging.getLogger("flukeline")


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error


def cmd_demo(a):
    from flukeline.data.demo.generate import generate_demo

    summary = generate_demo(a.out, a.truth, preset=a.preset, seed=a.seed, workers=a.workers, overrides=a.overrides)
    log.info("demo dataset: %s", json.dumps(summary, default=str))


def cmd_omniglot(a):
    from flukeline.data.omniglot import convert_omniglot

    summary = convert_omniglot(a.zip, a.out, a.truth, seed=a.seed, settings=a.settings)
    log.info("omniglot dataset: %s", json.dumps(summary))


def cmd_pixel_baseline(a):
    import pandas as pd

    from flukeline.core.io import write_csv_atomic, write_json_atomic
    from flukeline.evaluate.pixel_baseline import all_new_whale_ranking, raw_pixel_1nn, read_kaggle_root, score

    train, test = read_kaggle_root(a.root)
    threshold = a.threshold if a.threshold == "loo" else float(a.threshold)
    predictions, info = raw_pixel_1nn(train, test, size=a.size, threshold=threshold, k=a.k)
    result = {"method": "raw_pixel_1nn", **info, "n_test": len(test)}
    if a.truth:
        # Scoring against held-out identities: an evaluation, like the evaluate rule's.
        truth = pd.read_csv(a.truth, dtype=str, keep_default_na=False)
        result["test_map5"] = score(predictions, truth, a.k)
        ranking = " ".join(all_new_whale_ranking(train["id"].tolist(), a.k))
        result["all_new_whale_test_map5"] = score(predictions.assign(predicted=ranking), truth, a.k)
    if a.predictions:
        write_csv_atomic(predictions.rename(columns={"image": "Image", "predicted": "Id"}), a.predictions)
    if a.out:
        write_json_atomic(result, a.out)
    print(json.dumps(result, indent=2))


def cmd_classifier_baseline(a):
    import pandas as pd

    from flukeline.core.io import write_json_atomic, write_parquet_atomic
    from flukeline.evaluate.classifier_baseline import softmax_classifier

    width, height = (int(v) for v in a.size.split("x"))
    val, test, info = softmax_classifier(
        pd.read_parquet(a.train), pd.read_parquet(a.test), backbone=a.backbone, pretrained=a.pretrained,
        size=(width, height), fold=a.fold, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
        seed=a.seed,
    )
    write_parquet_atomic(val, a.val_predictions)
    write_parquet_atomic(test, a.test_predictions)
    if a.out:
        write_json_atomic(info, a.out)
    print(json.dumps(info, indent=2))


def cmd_contact_sheet(a):
    from flukeline.data.demo.contact_sheet import contact_sheet

    contact_sheet(a.root, a.out)


def cmd_data_summary(a):
    from flukeline.evaluate.data_summary import run_data_summary

    run_data_summary(a.train, a.test, a.out)


def cmd_metrics_table(a):
    from flukeline.evaluate.metrics_table import run_metrics_table

    run_metrics_table(a.metrics, a.summary or [], a.out)


def cmd_ingest(a):
    from flukeline.core.io import write_json_atomic
    from flukeline.data.ingest import ingest

    summary = ingest(
        a.root, a.train, a.test, a.rejected, on_bad_image=a.on_bad_image, annotations=a.annotations or None,
        n_folds=a.folds, seed=a.seed, threads=a.threads,
    )
    write_json_atomic(summary, a.summary)


def cmd_baseline(a):
    import pandas as pd

    from flukeline.evaluate.submission import all_new_whale

    all_new_whale(pd.read_parquet(a.train), pd.read_parquet(a.test), a.submission, a.val_predictions)


def cmd_detect(a):
    from flukeline.detect.threshold import run
    run(a.train, a.test, a.out, a.params, a.threads, a.keypoints_out, a.masks_out)


def cmd_detect_train(a):
    from flukeline.detect.train import run_train
    run_train(a.train, a.keypoints, a.params, a.seed, a.model, a.history, a.threads)


def cmd_detect_predict(a):
    from flukeline.detect.predict import run_predict
    run_predict(a.model, a.train, a.test, a.params, a.masks_dir, a.masks, a.keypoints, a.boxes, a.threads)


def cmd_detect_evaluate(a):
    from flukeline.detect.evaluate import run_evaluate
    run_evaluate(a.model, a.train, a.gt_keypoints, a.gt_boxes, a.masks, a.keypoints, a.boxes, a.metrics, a.overlays)


def cmd_align_transforms(a):
    from flukeline.align.transforms import run_transforms
    run_transforms(a.train, a.test, a.keypoints, a.boxes, a.params, a.out, a.contact_sheet)


def cmd_align(a):
    from flukeline.align.crops import run
    run(a.train, a.test, a.transforms, a.masks, a.size, a.margin, a.table, a.crops, a.threads)


def cmd_train(a):
    from flukeline.embed.train import run_train
    run_train(a.train, a.align, a.fold, a.params, a.model, a.history, a.curves, a.threads, a.pseudo_labels)


def cmd_embed(a):
    from flukeline.embed.inference import run_embed
    run_embed(a.model, a.align, a.out, a.threads)


def cmd_match(a):
    from flukeline.match.member import run_member

    run_member(a.train, a.embeddings, [int(f) for f in a.folds.split(",")], a.params, a.out_dir)


def cmd_ensemble(a):
    from flukeline.match.ensemble import run_ensemble

    if len(a.members) != len(a.weights):
        raise InputError(f"{len(a.members)} member folders but {len(a.weights)} weights")
    run_ensemble(a.members, a.weights, a.params, a.round, a.out_dir, a.pseudo_labels)


def cmd_submit(a):
    import pandas as pd

    from flukeline.evaluate.submission import write_submission

    rejected = pd.read_csv(a.rejected, dtype=str, keep_default_na=False) if a.rejected else None
    train = pd.read_parquet(a.train) if a.train else None
    write_submission(pd.read_parquet(a.test), pd.read_parquet(a.predictions), a.out, rejected=rejected, train=train)


def cmd_evaluate(a):
    from flukeline.core.io import write_json_atomic
    from flukeline.evaluate.scores import evaluate

    metrics = evaluate(a.baseline, a.method or [], a.submission, a.test_truth)
    write_json_atomic(metrics, a.out)


def cmd_gallery(a):
    from flukeline.gallery.manifest import manifest_from_run

    manifest_from_run(a.out_dir, **a.params)


def cmd_gallery_new(a):
    from flukeline.gallery.manifest import new_gallery

    new_gallery(a.gallery, a.backbone, None if a.pretrained == "none" else a.pretrained, a.size, a.threshold)
    print(f"empty gallery in {a.gallery}: add sightings with `flukeline add PHOTO... --id ID --gallery {a.gallery}`")


def cmd_identify(a):
    from flukeline.core.io import write_csv_atomic
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.identify import format_results, identify

    configure_torch(a.threads)
    results = identify(a.gallery, a.photos, a.top, a.threads)
    print(format_results(results))
    if a.out:
        write_csv_atomic(results, a.out)


def cmd_add(a):
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.sightings import add_sightings

    configure_torch(a.threads)
    added = add_sightings(a.gallery, a.photos, a.id, a.threads)
    print(f"{len(added['photo'].unique()) if len(added) else 0} new sighting(s) of {a.id} in {a.gallery}")


def cmd_calibrate_gallery(a):
    from flukeline.core.runtime import configure_torch
    from flukeline.gallery.calibrate import calibrate_gallery

    configure_torch(a.threads)
    found = calibrate_gallery(a.gallery, a.threads, a.max_queries)
    print(f"new_whale threshold {found['threshold']:.3f} (was {found['previous_threshold']:.3f}): leave-one-out MAP@5 "
          f"{found['map5']:.3f} (was {found['previous_map5']:.3f}) over {found['known_queries']} known and "
          f"{found['new_queries']} new queries")


def cmd_review(a):
    from flukeline.review.page import run

    run(a.train, a.test, a.align, a.predictions, a.summary, a.member_topk, a.out, thumb=a.thumb,
        near_threshold=a.near_threshold, min_margin=a.min_margin, threads=a.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flukeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="render the synthetic fluke dataset in the Kaggle layout")
    p.add_argument("--out", required=True, help="data root to write (train.csv, train/, test/, annotations/)")
    p.add_argument("--truth", required=True, help="CSV of the test identities (outside --out)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overrides", type=_json, default={})
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("omniglot", help="convert the Omniglot zip into the Kaggle layout (identity = character)")
    p.add_argument("--zip", required=True, help="e.g. images_background_small1.zip")
    p.add_argument("--out", required=True, help="data root to write (train.csv, train/, test/)")
    p.add_argument("--truth", required=True, help="CSV of the test identities (outside --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", type=_json, default={}, help="data.omniglot split settings (JSON), see flukeline.data.omniglot.DEFAULTS")
    p.set_defaults(func=cmd_omniglot)

    p = sub.add_parser("pixel-baseline", help="1-nearest-neighbour on raw pixels of a Kaggle-layout folder (no training)")
    p.add_argument("--root", required=True, help="Kaggle-layout data root")
    p.add_argument("--truth", default=None, help="CSV Image,Id of the test identities: adds test MAP@5 (and all-new_whale's)")
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE grayscale")
    p.add_argument("--threshold", default="loo", help="new_whale similarity threshold, or 'loo' (chosen on train leave-one-out)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--predictions", default=None, help="write the predictions as a submission CSV (Image,Id)")
    p.add_argument("--out", default=None, help="write the scores as JSON")
    p.set_defaults(func=cmd_pixel_baseline)

    p = sub.add_parser("classifier-baseline", help="softmax classifier on whole resized images (no detection, alignment or metric learning)")
    p.add_argument("--train", required=True, help="ingest's train.parquet (image, id, fold, path)")
    p.add_argument("--test", required=True, help="ingest's test.parquet")
    p.add_argument("--backbone", default="mobilenetv2_100", help="timm model name")
    p.add_argument("--pretrained", default="imagenet", help="none | imagenet | hub | a weights file (as embed.pretrained)")
    p.add_argument("--size", default="128x64", help="WIDTHxHEIGHT the whole images are resized to")
    p.add_argument("--fold", type=int, default=0, help="validation fold: not trained on, calibrates the new_whale threshold")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--val-predictions", required=True, help="Parquet: image, predicted, best_probability, fold, truth")
    p.add_argument("--test-predictions", required=True, help="Parquet: image, predicted, best_probability")
    p.add_argument("--out", default=None, help="write the settings, threshold and losses as JSON")
    p.set_defaults(func=cmd_classifier_baseline)

    p = sub.add_parser("contact-sheet", help="grid of identities x sightings of a demo dataset")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser("data-summary", help="figure for the report: images per identity, image sizes, grayscale share")
    p.add_argument("--train", required=True, help="ingest's train.parquet")
    p.add_argument("--test", required=True, help="ingest's test.parquet")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_data_summary)

    p = sub.add_parser("metrics-table", help="HTML table for the report: CV (and demo test) MAP@5 and threshold per member and ensemble")
    p.add_argument("--metrics", required=True, help="evaluate's metrics.json")
    p.add_argument("--summary", nargs=2, action="append", metavar=("NAME", "SUMMARY_JSON"),
                   help="a scored method's name in metrics.json and its match summary.json; repeat for each")
    p.add_argument("--out", required=True, help="HTML to write")
    p.set_defaults(func=cmd_metrics_table)

    p = sub.add_parser("ingest", help="validate a Kaggle-layout data root and write the image tables")
    p.add_argument("--root", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--rejected", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--annotations", type=_json, default={})
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("baseline", help="the all-new_whale submission and its validation predictions")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--submission", required=True)
    p.add_argument("--val-predictions", required=True)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("detect", help="classical detection (detect.method threshold or none): one box per image")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True, help="boxes.parquet")
    p.add_argument("--keypoints-out", default=None, help="keypoints.parquet (empty: no landmarks)")
    p.add_argument("--masks-out", default=None, help="masks.parquet (empty: no masks)")
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("detect-train", help="train the U-Net mask + keypoint-heatmap detector on annotated images")
    p.add_argument("--train", required=True)
    p.add_argument("--keypoints", required=True, help="annotation keypoints from ingest")
    p.add_argument("--params", type=_json, required=True, help="detect.model settings plus detect.keypoints (JSON)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_detect_train)

    p = sub.add_parser("detect-predict", help="masks, keypoints and boxes of every image with the trained detector")
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--params", type=_json, default={}, help="detect.boxes settings (JSON)")
    p.add_argument("--masks-dir", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--keypoints", required=True)
    p.add_argument("--boxes", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_detect_predict)

    p = sub.add_parser("detect-evaluate", help="mask IoU, box IoU and PCK on held-out annotated images; overlays")
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--gt-keypoints", required=True)
    p.add_argument("--gt-boxes", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--keypoints", required=True)
    p.add_argument("--boxes", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--overlays", required=True)
    p.set_defaults(func=cmd_detect_evaluate)

    p = sub.add_parser("align-transforms", help="per image: landmark (or box) transform onto the template")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--keypoints", required=True)
    p.add_argument("--boxes", required=True)
    p.add_argument("--params", type=_json, default={}, help="the align.* settings (JSON)")
    p.add_argument("--out", required=True, help="align.parquet to write")
    p.add_argument("--contact-sheet", required=True, help="PNG: photos with landmarks -> aligned and box crops")
    p.set_defaults(func=cmd_align_transforms)

    p = sub.add_parser("align", help="aligned and box crops (and masks) of every image at one size")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--transforms", required=True, help="align.parquet from align-transforms")
    p.add_argument("--masks", default=None, help="detect's masks.parquet (optional)")
    p.add_argument("--size", required=True, help="WIDTHxHEIGHT")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--table", required=True)
    p.add_argument("--crops", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("train", help="train one ensemble member without one validation fold")
    p.add_argument("--train", required=True)
    p.add_argument("--align", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--params", type=_json, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--curves", required=True)
    p.add_argument("--pseudo-labels", help="test images (image, id) the previous round matched confidently: extra training data")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="embeddings of every aligned crop with a trained member")
    p.add_argument("--model", required=True)
    p.add_argument("--align", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("match", help="one member's top-k candidates, calibrated threshold and predictions")
    p.add_argument("--train", required=True)
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--folds", required=True, help="comma-separated folds, one per embeddings table")
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("ensemble", help="combine members (weighted average or vote) and pick pseudo-labels")
    p.add_argument("--members", nargs="+", required=True, help="member match folders")
    p.add_argument("--weights", nargs="+", type=float, required=True, help="one weight per member folder")
    p.add_argument("--params", type=_json, default={})
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--pseudo-labels", required=True, help="Parquet of test images taken for the next round")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("submit", help="write the Kaggle submission CSV")
    p.add_argument("--test", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rejected", help="rejected.csv of ingest: skipped test images get the baseline's row")
    p.add_argument("--train", help="train.parquet (the baseline's most frequent ids), with --rejected")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("evaluate", help="cross-validated metrics (and demo test metrics)")
    p.add_argument("--baseline", required=True)
    p.add_argument("--method", nargs=3, action="append", metavar=("NAME", "VAL_PREDICTIONS", "TEST_PREDICTIONS"),
                   help="a scored method (member or ensemble); repeat for each")
    p.add_argument("--submission", required=True)
    p.add_argument("--test-truth", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("review", help="static HTML page to review the final candidates and export decisions as CSV")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--align", required=True, help="align.parquet of one crop size (its crop_path column)")
    p.add_argument("--predictions", required=True, help="the final ensemble's test_predictions.parquet")
    p.add_argument("--summary", required=True, help="the final ensemble's summary.json (threshold, member weights)")
    p.add_argument("--member-topk", nargs="+", required=True, help="test_topk.parquet of every member the ensemble combines")
    p.add_argument("--out", required=True, help="index.html to write")
    p.add_argument("--thumb", type=int, default=160, help="thumbnail size: longer side in pixels")
    p.add_argument("--near-threshold", type=float, default=0.02,
                   help="low confidence: top similarity this close to the new_whale threshold")
    p.add_argument("--min-margin", type=float, default=0.01,
                   help="low confidence: best identity ahead of the second by less than this")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("identify", help="top identities (and the new_whale decision) of new photos against a gallery")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--gallery", default="results/gallery", help="gallery folder (default: the workflow's, results/gallery)")
    p.add_argument("--top", type=int, default=5, help="identities listed per photo, new_whale included (default 5)")
    p.add_argument("--out", help="also write the lists as CSV (photo, rank, id, similarity, threshold)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("add", help="add confirmed sightings of one individual to a gallery (no retraining)")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--id", required=True, help="the individual's id")
    p.add_argument("--gallery", default="results/gallery")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("calibrate-gallery", help="set a gallery's new_whale threshold by leave-one-out over its sightings")
    p.add_argument("--gallery", default="results/gallery")
    p.add_argument("--max-queries", type=int, default=2000, help="sightings held out in turn (a seeded sample above this)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_calibrate_gallery)

    p = sub.add_parser("gallery-new", help="an empty gallery with an untrained ImageNet backbone (no workflow run needed)")
    p.add_argument("gallery", help="folder to create")
    p.add_argument("--backbone", default="mobilenetv2_100", help="timm architecture (ImageNet offline: mobilenetv2_100, efficientnet_lite0, tf_efficientnet_lite0)")
    p.add_argument("--pretrained", default="imagenet", help="imagenet | hub | none | a local weights file")
    p.add_argument("--size", default="224x224", help="crop size WxH the photos are resized to")
    p.add_argument("--threshold", type=float, default=0.5, help="new_whale below this cosine similarity")
    p.set_defaults(func=cmd_gallery_new)

    p = sub.add_parser("gallery", help="(workflow rule) the gallery manifest of a finished run")
    p.add_argument("--params", type=_json, required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_gallery)
    return parser


def main(argv=None) -> int:
    # Idle OpenMP threads sleep instead of spinning: when Snakemake runs two jobs on the same
    # cores, spinning threads slowed training ~10x here (set before torch loads libgomp).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as error:
        # A problem with the user's data or config: the message says what and where.
        print(f"flukeline {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0
