"""Export command: `flukeline export`, run by the export rule (a workflow command), and by people
after `flukeline accept` with the new catalogue version (--catalogue). The runner is imported
inside the command, so `--help` stays fast."""

from __future__ import annotations

import json

from flukeline.core.cli_args import add_command, add_option, add_params, call_runner


def cmd_export(args):
    from flukeline.export.run import run_export

    summary = call_runner(run_export, args)
    print(json.dumps({"files": summary["files"], "abundance": summary["abundance"]}, indent=2))


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "export",
        cmd_export,
        "Darwin Core occurrences, capture histories for MARK, discovery curve and abundance estimate",
    )
    add_option(p, "--train", "train_path", default="results/data/train.parquet", help="the run's train table")
    add_option(p, "--test", "test_path", default="results/data/test.parquet", help="the run's test table (photos)")
    add_option(
        p, "--decisions", "decisions_path", default="results/decisions.csv", help="the decide rule's decisions.csv"
    )
    add_option(
        p,
        "--catalogue",
        "catalogue_path",
        default=None,
        help="a catalogue version (catalogue-NNNN.csv) or the catalogue folder (its newest version): its photos"
        " count as reviewed",
    )
    add_option(
        p,
        "--train-csv",
        "train_csv",
        default=None,
        help="the data root's train.csv, so that a training photo's problem names its line",
    )
    add_option(p, "--config", "config_path", default=None, help="a config file whose export section to use")
    add_params(p, help="export settings as JSON (the rule's; over --config's)")
    add_option(p, "--out", "out_dir", default="results/export", help="folder to write the files into")
