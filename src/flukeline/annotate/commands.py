"""Annotate command: the static page on which a person draws boxes and clicks keypoints on train
photos and exports them as the CSVs `data.annotations` reads. The runner is imported inside the
command, so `--help` stays fast."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_option, add_seed, add_threads


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "annotate",
        "flukeline.annotate.page:run",
        "static HTML page to draw boxes and keypoints on train photos (data.annotations CSVs)",
        user=True,
    )
    source = p.add_mutually_exclusive_group(required=True)
    add_option(source, "--train", "train_path", help="ingest's train.parquet (results/data/train.parquet)")
    source.add_argument("--root", help="a Kaggle-layout folder (train.csv, train/)")
    p.add_argument(
        "--new-label",
        default="new_whale",
        help="with --root: train.csv's Id for an animal not in the catalogue (data.new_label, e.g. unknown)",
    )
    p.add_argument(
        "--keypoints",
        required=True,
        help="detect.keypoints in clicking order, comma-separated (e.g. left_tip,notch,right_tip)",
    )
    p.add_argument("--n", type=int, default=200, help="photos on the page, spread over identities")
    add_seed(p)
    p.add_argument("--display", type=int, default=640, help="embedded photo size: longer side in pixels")
    p.add_argument("--out", default="annotate.html", help="the HTML page to write")
    add_threads(p, default=2)
