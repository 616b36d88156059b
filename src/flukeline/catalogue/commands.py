"""Catalogue commands: `accept`, run by a person after the review page (not by a rule: it turns a
person's export into the next run's training data). The runner is imported inside the command,
so `--help` stays fast."""

from __future__ import annotations

import json

from flukeline.core.cli_args import add_command, add_option, call_runner


def cmd_accept(args):
    from flukeline.catalogue.accept import accept

    print(json.dumps(call_runner(accept, args), indent=2))


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "accept",
        cmd_accept,
        "add the review page's confirmed matches and new individuals to the catalogue (a new version)",
        user=True,
    )
    add_option(p, "--decisions", "decisions_path", required=True, help="the review page's export (Image,decision,Id)")
    add_option(p, "--test", "test_path", default="results/data/test.parquet", help="the run's test table (photos)")
    add_option(p, "--train", "train_path", default="results/data/train.parquet", help="the run's train table (ids)")
    add_option(
        p,
        "--catalogue",
        "catalogue_dir",
        default="catalogue",
        help="catalogue folder (data.catalogue): catalogue-NNNN.csv versions and photos/",
    )
    p.add_argument("--prefix", default="flk_", help="prefix of the fresh ids of new individuals")
    add_option(
        p,
        "--gallery",
        "gallery_dir",
        default=None,
        help="also add the accepted photos to this gallery as sightings (results/gallery; no retraining)",
    )
    p.add_argument("--threads", type=int, default=1)
