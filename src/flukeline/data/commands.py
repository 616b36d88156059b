"""Data stage commands (workflow/rules/data.smk): the demo and Omniglot datasets, and ingest of a
Kaggle-layout data root. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

import json
import logging

from flukeline.core.cli_args import add_command, add_required, add_seed, add_threads, json_value

log = logging.getLogger("flukeline")


def cmd_demo(args):
    from flukeline.data.demo.generate import generate_demo

    summary = generate_demo(
        out_root=args.out,
        truth_path=args.truth,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        overrides=args.overrides,
    )
    log.info("demo dataset: %s", json.dumps(summary, default=str))


def cmd_omniglot(args):
    from flukeline.data.omniglot import convert_omniglot

    summary = convert_omniglot(
        zip_path=args.zip, out_root=args.out, truth_path=args.truth, seed=args.seed, settings=args.settings
    )
    log.info("omniglot dataset: %s", json.dumps(summary))


def cmd_contact_sheet(args):
    from flukeline.data.demo.contact_sheet import contact_sheet

    contact_sheet(out_root=args.root, out_png=args.out)


def cmd_ingest(args):
    from flukeline.core.io import write_json_atomic
    from flukeline.data.ingest import ingest

    summary = ingest(
        root=args.root,
        out_train=args.train,
        out_test=args.test,
        out_rejected=args.rejected,
        on_bad_image=args.on_bad_image,
        annotations=args.annotations or None,
        n_folds=args.folds,
        seed=args.seed,
        threads=args.threads,
        min_image_side=args.min_image_side,
        out_duplicates=args.duplicates,
    )
    write_json_atomic(summary, args.summary)


def _add_generated_root(parser, out_help: str) -> None:
    """A generated dataset: the data root, and its test identities kept outside it."""
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--truth", required=True, help="CSV of the test identities (outside --out)")


def register(subparsers) -> None:
    p = add_command(subparsers, "demo", cmd_demo, "render the synthetic fluke dataset in the Kaggle layout")
    _add_generated_root(p, "data root to write (train.csv, train/, test/, annotations/)")
    p.add_argument("--preset", default="demo")
    add_seed(p)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overrides", type=json_value, default={})

    p = add_command(
        subparsers, "omniglot", cmd_omniglot, "convert the Omniglot zip into the Kaggle layout (identity = character)"
    )
    p.add_argument("--zip", required=True, help="e.g. images_background_small1.zip")
    _add_generated_root(p, "data root to write (train.csv, train/, test/)")
    add_seed(p)
    p.add_argument(
        "--settings",
        type=json_value,
        default={},
        help="data.omniglot split settings (JSON), see flukeline.data.omniglot.DEFAULTS",
    )

    p = add_command(subparsers, "contact-sheet", cmd_contact_sheet, "grid of identities x sightings of a demo dataset")
    add_required(p, "--root", "--out")

    p = add_command(subparsers, "ingest", cmd_ingest, "validate a Kaggle-layout data root and write the image tables")
    add_required(p, "--root", "--train", "--test", "--rejected", "--summary")
    p.add_argument("--annotations", type=json_value, default={})
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument(
        "--min-image-side",
        type=int,
        default=0,
        help="photos with a side under this many pixels are warned about (skipped with skip); 0: no check",
    )
    p.add_argument("--duplicates", default=None, help="duplicates.csv to write (default: beside --rejected)")
    add_seed(p)
    add_threads(p)
