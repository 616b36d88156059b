"""Evaluate stage commands: the rules' baseline, submission, scores and report figures
(workflow/rules/data.smk and match.smk), and two baselines people run by hand on a data root
(pixel-baseline, classifier-baseline). The runners are imported inside the commands (pandas, torch)."""

from __future__ import annotations

import json

from flukeline.core.cli_args import add_command, add_option, add_seed, add_threads, add_train_test, call_runner


def cmd_pixel_baseline(args):
    import pandas as pd

    from flukeline.core.io import write_csv_atomic, write_json_atomic
    from flukeline.evaluate.pixel_baseline import all_new_whale_ranking, raw_pixel_1nn, read_kaggle_root, score

    train, test = read_kaggle_root(root=args.root)
    threshold = args.threshold if args.threshold == "loo" else float(args.threshold)
    predictions, info = raw_pixel_1nn(train=train, test=test, size=args.size, threshold=threshold, k=args.k)
    result = {"method": "raw_pixel_1nn", **info, "n_test": len(test)}
    if args.truth:
        # Scoring against held-out identities: an evaluation, like the evaluate rule's.
        truth = pd.read_csv(args.truth, dtype=str, keep_default_na=False)
        result["test_map5"] = score(predictions=predictions, truth=truth, k=args.k)
        ranking = " ".join(all_new_whale_ranking(train_ids=train["id"].tolist(), k=args.k))
        result["all_new_whale_test_map5"] = score(
            predictions=predictions.assign(predicted=ranking), truth=truth, k=args.k
        )
    if args.predictions:
        write_csv_atomic(predictions.rename(columns={"image": "Image", "predicted": "Id"}), args.predictions)
    if args.out:
        write_json_atomic(result, args.out)
    print(json.dumps(result, indent=2))


def cmd_classifier_baseline(args):
    import pandas as pd

    from flukeline.core.io import write_json_atomic, write_parquet_atomic
    from flukeline.evaluate.classifier_baseline import softmax_classifier

    width, height = (int(v) for v in args.size.split("x"))
    val, test, info = call_runner(
        softmax_classifier,
        args,
        train=pd.read_parquet(args.train),
        test=pd.read_parquet(args.test),
        size=(width, height),
    )
    write_parquet_atomic(val, args.val_predictions)
    write_parquet_atomic(test, args.test_predictions)
    if args.out:
        write_json_atomic(info, args.out)
    print(json.dumps(info, indent=2))


def cmd_metrics_table(args):
    from flukeline.evaluate.metrics_table import run_metrics_table

    call_runner(run_metrics_table, args, summaries=args.summaries or [])


def cmd_baseline(args):
    import pandas as pd

    from flukeline.evaluate.submission import all_new_whale

    call_runner(all_new_whale, args, train=pd.read_parquet(args.train), test=pd.read_parquet(args.test))


def cmd_pixel_embeddings(args):
    import pandas as pd

    from flukeline.core.io import write_parquet_atomic
    from flukeline.evaluate.pixel_baseline import pixel_embeddings

    table = call_runner(pixel_embeddings, args, train=pd.read_parquet(args.train), test=pd.read_parquet(args.test))
    write_parquet_atomic(table, args.out)


def cmd_box_embeddings(args):
    import pandas as pd

    from flukeline.core.io import write_parquet_atomic
    from flukeline.evaluate.box_zero_shot import box_embeddings

    table = call_runner(
        box_embeddings,
        args,
        train=pd.read_parquet(args.train),
        test=pd.read_parquet(args.test),
        boxes=pd.read_parquet(args.boxes),
    )
    write_parquet_atomic(table, args.out)


def cmd_evaluate(args):
    from flukeline.core.io import write_json_atomic
    from flukeline.evaluate.scores import evaluate

    metrics = call_runner(evaluate, args, methods=args.methods or [], baselines=args.baselines or [])
    write_json_atomic(metrics, args.out)


def register(subparsers) -> None:
    _register_workflow_commands(subparsers)
    _register_pixel_baseline(subparsers)
    _register_classifier_baseline(subparsers)
    p = add_command(
        subparsers,
        "pixel-embeddings",
        cmd_pixel_embeddings,
        "raw pixels of every photo as an embeddings table (the raw-pixel 1-NN baseline)",
        own=("out",),
    )
    add_train_test(p, "ingest's train.parquet", "ingest's test.parquet", dests=("train", "test"))
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE grayscale")
    p.add_argument("--out", required=True, help="embeddings.parquet to write")
    p.add_argument("--cache", dest="cache_dir", default=None, help="folder of the per-photo vectors (optional)")
    add_threads(p)
    p = add_command(
        subparsers,
        "box-embeddings",
        cmd_box_embeddings,
        "a zero-shot model's embeddings of every photo's whole detect box at the backbone's native input",
        own=("out",),
    )
    add_train_test(p, "ingest's train.parquet", "ingest's test.parquet", dests=("train", "test"))
    p.add_argument("--model", dest="model_path", required=True, help="zero-shot-model's model file")
    p.add_argument("--boxes", required=True, help="detect's boxes.parquet")
    p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("W", "H"), help="input size")
    p.add_argument("--cache", dest="cache_dir", default=None, help="folder of the per-photo embeddings (optional)")
    p.add_argument("--out", required=True, help="embeddings.parquet to write")
    add_threads(p)


def _register_workflow_commands(subparsers) -> None:
    p = add_command(
        subparsers,
        "data-summary",
        "flukeline.evaluate.data_summary:run_data_summary",
        "figure for the report: images per identity, image sizes, grayscale share",
    )
    add_train_test(p, "ingest's train.parquet", "ingest's test.parquet")
    add_option(p, "--out", "out_path", required=True, help="PNG to write")

    p = add_command(
        subparsers,
        "metrics-table",
        cmd_metrics_table,
        "HTML table for the report: CV (and demo test) MAP@5 and threshold per member and ensemble",
    )
    add_option(p, "--metrics", "metrics_path", required=True, help="evaluate's metrics.json")
    add_option(
        p,
        "--summary",
        "summaries",
        nargs=2,
        action="append",
        metavar=("NAME", "SUMMARY_JSON"),
        help="a scored method's name in metrics.json and its match summary.json; repeat for each",
    )
    add_option(
        p,
        "--section",
        "sections",
        action="append",
        default=[],
        help="an HTML fragment a later stage wrote (the export's section.html), appended; repeat for each",
    )
    add_option(p, "--out", "out_path", required=True, help="HTML to write")

    p = add_command(subparsers, "baseline", cmd_baseline, "the all-new_whale submission and its validation predictions")
    add_train_test(p, dests=("train", "test"))
    add_option(p, "--submission", "submission_path", required=True)
    add_option(p, "--val-predictions", "val_predictions_path", required=True)

    p = add_command(subparsers, "submit", "flukeline.evaluate.submission:submit", "write the Kaggle submission CSV")
    add_option(p, "--test", "test_path", required=True)
    add_option(p, "--predictions", "predictions_path", required=True)
    add_option(p, "--out", "out_path", required=True)
    add_option(
        p, "--rejected", "rejected_path", help="rejected.csv of ingest: skipped test images get the baseline's row"
    )
    add_option(p, "--train", "train_path", help="train.parquet (the baseline's most frequent ids), with --rejected")
    # Issue 24: training ids back to the user's ids, and train/test leaks (flukeline.evaluate.submission).
    add_option(p, "--id-groups", "id_groups_path", help="id_groups.csv of ingest: merged training ids -> original ids")
    add_option(p, "--duplicates", "duplicates_path", help="duplicates.csv of ingest (the leaks, with --use-leaks)")
    add_option(p, "--use-leaks", "use_leaks", action="store_true", help="list a leaked training photo's id first")
    add_option(p, "--topk", "topk_path", help="the ensemble's test_topk.parquet: candidates that fill shortened lists")
    add_option(
        p,
        "--embeddings",
        "embedding_paths",
        nargs="+",
        default=(),
        help="embeddings.parquet tables: the photo's similarity orders a merged id's original ids",
    )

    p = add_command(
        subparsers, "evaluate", cmd_evaluate, "cross-validated metrics (and demo test metrics)", own=("out",)
    )
    add_option(p, "--baseline", "baseline_predictions", required=True)
    # Both repeated NAME VAL_PREDICTIONS TEST_PREDICTIONS triples: the runner's methods and baselines.
    scored = {"nargs": 3, "action": "append", "metavar": ("NAME", "VAL_PREDICTIONS", "TEST_PREDICTIONS")}
    add_option(p, "--method", "methods", **scored, help="a scored method (member or ensemble); repeat for each")
    add_option(
        p,
        "--baseline-method",
        "baselines",
        **scored,
        help="a reference without training (raw-pixel or zero-shot 1-NN), scored like a method; repeat",
    )
    p.add_argument(
        "--submission-method",
        default=None,
        help="the scored method the submission is (the final ensemble): warned about when a baseline beats it",
    )
    add_option(p, "--submission", "submission_path", required=True)
    add_option(p, "--test-truth", "test_truth_path", default=None)
    add_option(
        p,
        "--id-groups",
        "id_groups_path",
        default=None,
        help="id_groups.csv of ingest: test predictions are scored after expansion into original ids",
    )
    add_option(p, "--train", "train_path", default=None, help="train.parquet (fills lists expansion shortened)")
    add_option(
        p,
        "--ensemble-summary",
        "ensemble_summary_path",
        default=None,
        help="the final ensemble's summary.json: its estimated share of new individuals beside the true one",
    )
    p.add_argument("--out", required=True)

    p = add_command(
        subparsers,
        "decision-scores",
        "flukeline.evaluate.decision_scores:run_decision_scores",
        "the decisions (match / new individual / review) scored against the test truth",
    )
    add_option(p, "--decisions", "decisions_path", required=True, help="the decide rule's decisions.csv")
    add_option(p, "--summary", "summary_path", required=True, help="its summary.json (validation figures)")
    add_option(p, "--truth", "truth_path", required=True, help="the test identities (Image,Id)")
    p.add_argument("--out", required=True, help="test_scores.json to write")


def _register_pixel_baseline(subparsers) -> None:
    p = add_command(
        subparsers,
        "pixel-baseline",
        cmd_pixel_baseline,
        "1-nearest-neighbour on raw pixels of a Kaggle-layout folder (no training)",
        user=True,
    )
    p.add_argument("--root", required=True, help="Kaggle-layout data root")
    p.add_argument(
        "--truth", default=None, help="CSV Image,Id of the test identities: adds test MAP@5 (and all-new_whale's)"
    )
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE grayscale")
    p.add_argument(
        "--threshold", default="loo", help="new_whale similarity threshold, or 'loo' (chosen on train leave-one-out)"
    )
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--predictions", default=None, help="write the predictions as a submission CSV (Image,Id)")
    p.add_argument("--out", default=None, help="write the scores as JSON")


def _register_classifier_baseline(subparsers) -> None:
    p = add_command(
        subparsers,
        "classifier-baseline",
        cmd_classifier_baseline,
        "softmax classifier on whole resized images (no detection, alignment or metric learning)",
        user=True,
        own=("val_predictions", "test_predictions", "out"),
    )
    add_train_test(
        p, "ingest's train.parquet (image, id, fold, path)", "ingest's test.parquet", dests=("train", "test")
    )
    p.add_argument("--backbone", default="mobilenetv2_100", help="timm model name")
    p.add_argument(
        "--pretrained", default="imagenet", help="none | imagenet | hub | a weights file (as embed.pretrained)"
    )
    p.add_argument("--size", default="128x64", help="WIDTHxHEIGHT the whole images are resized to")
    p.add_argument(
        "--fold", type=int, default=0, help="validation fold: not trained on, calibrates the new_whale threshold"
    )
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    add_seed(p)
    add_threads(p)
    p.add_argument("--val-predictions", required=True, help="Parquet: image, predicted, best_probability, fold, truth")
    p.add_argument("--test-predictions", required=True, help="Parquet: image, predicted, best_probability")
    p.add_argument("--out", default=None, help="write the settings, threshold and losses as JSON")
