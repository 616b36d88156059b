"""Review stage command (workflow/rules/review.smk): the static page on which a person checks the
final candidates. The runner is imported inside the command, so `--help` stays fast."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_option, add_threads, add_train_test


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "review",
        "flukeline.review.page:run",
        "static HTML page to review the final candidates and export decisions as CSV",
    )
    add_train_test(p)
    add_option(p, "--align", "align_path", required=True, help="align.parquet of one crop size (its crop_path column)")
    add_option(
        p, "--predictions", "predictions_path", required=True, help="the final ensemble's test_predictions.parquet"
    )
    add_option(
        p, "--summary", "summary_path", required=True, help="the final ensemble's summary.json (threshold, score)"
    )
    add_option(
        p,
        "--topk",
        "topk_path",
        required=True,
        help="the final ensemble's test_topk.parquet: the scores it ranked by (similarities or votes)",
    )
    add_option(
        p,
        "--decisions",
        "decisions_path",
        default=None,
        help="the decide rule's decisions.csv: decision classes and probabilities, review photos first",
    )
    add_option(
        p,
        "--correspondences",
        "correspondences_path",
        default=None,
        help="the local-feature member's correspondences.parquet (final round): each candidate's inlier keypoints,"
        " drawn as lines between the query's and the matched gallery image's crops",
    )
    p.add_argument("--out", required=True, help="index.html to write")
    p.add_argument("--thumb", type=int, default=160, help="thumbnail size: longer side in pixels")
    p.add_argument(
        "--near-threshold",
        type=float,
        default=0.02,
        help="low confidence: top similarity this close to the new_whale threshold",
    )
    p.add_argument(
        "--min-margin",
        type=float,
        default=0.01,
        help="low confidence: best identity ahead of the second by less than this",
    )
    add_threads(p)
