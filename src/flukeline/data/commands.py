"""Data stage commands (workflow/rules/data.smk): the demo and Omniglot datasets, and ingest of a
Kaggle-layout data root. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

import json
import logging

from flukeline.core.cli_args import (
    add_cache,
    add_command,
    add_option,
    add_params,
    add_required,
    add_seed,
    add_threads,
    call_runner,
    json_value,
)

log = logging.getLogger("flukeline")


def cmd_demo(args):
    from flukeline.data.demo.generate import generate_demo

    summary = call_runner(generate_demo, args)
    log.info("demo dataset: %s", json.dumps(summary, default=str))


def cmd_omniglot(args):
    from flukeline.data.omniglot import convert_omniglot

    summary = call_runner(convert_omniglot, args)
    log.info("omniglot dataset: %s", json.dumps(summary))


def cmd_ingest(args):
    from flukeline.core.io import write_json_atomic
    from flukeline.data.ingest import ingest

    summary = call_runner(ingest, args, settings=args.params, annotations=args.annotations or None)
    write_json_atomic(summary, args.summary)


def _add_generated_root(parser, out_help: str) -> None:
    """A generated dataset: the data root, and its test identities kept outside it."""
    add_option(parser, "--out", "out_root", required=True, help=out_help)
    add_option(parser, "--truth", "truth_path", required=True, help="CSV of the test identities (outside --out)")


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "init",
        "flukeline.data.init:init_folder",
        "look at your photo folder: what is in it, what to run, and a config that runs",
        user=True,
    )
    p.add_argument(
        "path", help="a Kaggle-layout folder (train.csv, train/, test/) or one subfolder of photos per individual"
    )
    p.add_argument("--config", default=None, help="config file to write (default: flukeline-<folder name>.yaml here)")
    p.add_argument(
        "--out",
        default=None,
        help="with one subfolder per individual: the Kaggle layout to make (default: <path>-kaggle)",
    )
    p.add_argument(
        "--test", default=None, help="with one subfolder per individual: the photos to identify (default: <path>/test)"
    )
    p.add_argument("--new-label", default="new_whale", help="the Id (or subfolder) of unknown animals, e.g. unknown")
    p.add_argument("--force", action="store_true", help="replace an existing --config file")
    add_threads(p, default=2)

    p = add_command(
        subparsers,
        "add-season",
        "flukeline.data.season:add_season",
        "new photos against the catalogue: their data root and config (a rerun computes only them)",
        user=True,
    )
    p.add_argument("new_photos", help="folder of the new season's photos (to identify)")
    add_option(p, "--root", "root", required=True, help="the catalogue's data root (train.csv, train/)")
    add_option(p, "--out", "out", required=True, help="the new season's data root to make (links, no copies)")
    add_option(p, "--config", "config_out", default=None, help="config file to write (default: <out>.yaml)")

    p = add_command(subparsers, "demo", cmd_demo, "render the synthetic fluke dataset in the Kaggle layout")
    _add_generated_root(p, "data root to write (train.csv, train/, test/, annotations/)")
    p.add_argument("--preset", default="demo")
    add_seed(p)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overrides", type=json_value, default={})

    p = add_command(
        subparsers, "omniglot", cmd_omniglot, "convert the Omniglot zip into the Kaggle layout (identity = character)"
    )
    add_option(p, "--zip", "zip_path", required=True, help="e.g. images_background_small1.zip")
    _add_generated_root(p, "data root to write (train.csv, train/, test/)")
    add_seed(p)
    p.add_argument(
        "--settings",
        type=json_value,
        default={},
        help="data.omniglot split settings (JSON), see flukeline.data.omniglot.DEFAULTS",
    )

    p = add_command(
        subparsers,
        "contact-sheet",
        "flukeline.data.demo.contact_sheet:contact_sheet",
        "grid of identities x sightings of a demo dataset",
    )
    add_required(p, out_root="--root", out_png="--out")

    p = add_command(
        subparsers,
        "ingest",
        cmd_ingest,
        "validate a Kaggle-layout data root and write the image tables",
        own=("summary", "params"),
    )
    add_required(p, "--root", out_train="--train", out_test="--test", out_rejected="--rejected")
    add_required(p, "--summary")
    p.add_argument("--annotations", type=json_value, default={})
    add_cache(p)
    add_params(
        p,
        "the data.* settings ingest consumes (JSON): new_label, on_bad_image, min_image_side, group_duplicate_ids,"
        " group_new_whale_duplicates, folds; absent keys take flukeline.data.settings.IngestSettings' defaults",
    )
    add_option(
        p, "--duplicates", "out_duplicates", default=None, help="duplicates.csv to write (default: beside --rejected)"
    )
    add_option(
        p, "--id-groups", "out_id_groups", default=None, help="id_groups.csv to write (default: beside --rejected)"
    )
    p.add_argument(
        "--catalogue",
        default=None,
        help="catalogue CSV of confirmed photos (flukeline accept; data.catalogue): more training rows",
    )
    add_seed(p)
    add_threads(p)
