"""Match stage commands (workflow/rules/match.smk): one member's candidates and threshold, and the
ensemble of members. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_option, add_params, add_required, call_runner
from flukeline.core.errors import InputError


def cmd_match(args):
    from flukeline.match.member import run_member

    call_runner(run_member, args, folds=[int(f) for f in args.folds.split(",")])


def cmd_ensemble(args):
    from flukeline.match.ensemble import run_ensemble

    if len(args.member_dirs) != len(args.member_weights):
        raise InputError(f"{len(args.member_dirs)} member folders but {len(args.member_weights)} weights")
    call_runner(run_ensemble, args)


def register(subparsers) -> None:
    p = add_command(
        subparsers, "match", cmd_match, "one member's top-k candidates, calibrated threshold and predictions"
    )
    add_required(p, train_path="--train")
    add_option(p, "--embeddings", "embedding_paths", nargs="+", required=True)
    p.add_argument("--folds", required=True, help="comma-separated folds, one per embeddings table")
    add_params(p)
    p.add_argument("--out-dir", required=True)

    p = add_command(
        subparsers, "ensemble", cmd_ensemble, "combine members (weighted average or vote) and pick pseudo-labels"
    )
    add_option(p, "--members", "member_dirs", nargs="+", required=True, help="member match folders")
    add_option(
        p, "--weights", "member_weights", nargs="+", type=float, required=True, help="one weight per member folder"
    )
    add_params(p)
    add_option(p, "--round", "round_", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    add_option(
        p,
        "--pseudo-labels",
        "pseudo_labels_path",
        required=True,
        help="Parquet of test images taken for the next round",
    )
