"""Match stage commands (workflow/rules/match.smk): one member's candidates and threshold, and the
ensemble of members. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_params
from flukeline.core.errors import InputError


def cmd_match(args):
    from flukeline.match.member import run_member

    run_member(
        train_path=args.train,
        embedding_paths=args.embeddings,
        folds=[int(f) for f in args.folds.split(",")],
        params=args.params,
        out_dir=args.out_dir,
    )


def cmd_ensemble(args):
    from flukeline.match.ensemble import run_ensemble

    if len(args.members) != len(args.weights):
        raise InputError(f"{len(args.members)} member folders but {len(args.weights)} weights")
    run_ensemble(
        member_dirs=args.members,
        member_weights=args.weights,
        params=args.params,
        round_=args.round,
        out_dir=args.out_dir,
        pseudo_labels_path=args.pseudo_labels,
    )


def register(subparsers) -> None:
    p = add_command(
        subparsers, "match", cmd_match, "one member's top-k candidates, calibrated threshold and predictions"
    )
    p.add_argument("--train", required=True)
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--folds", required=True, help="comma-separated folds, one per embeddings table")
    add_params(p)
    p.add_argument("--out-dir", required=True)

    p = add_command(
        subparsers, "ensemble", cmd_ensemble, "combine members (weighted average or vote) and pick pseudo-labels"
    )
    p.add_argument("--members", nargs="+", required=True, help="member match folders")
    p.add_argument("--weights", nargs="+", type=float, required=True, help="one weight per member folder")
    add_params(p)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--pseudo-labels", required=True, help="Parquet of test images taken for the next round")
