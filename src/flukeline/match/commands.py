"""Match stage commands (workflow/rules/match.smk, local.smk): one member's candidates and
threshold, the ensemble of members, and the local-feature member (features per split, then the
shortlisted pairs). The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

from flukeline.core.cli_args import add_command, add_option, add_params, add_required, add_threads, call_runner
from flukeline.core.errors import InputError


def cmd_match(args):
    from flukeline.match.member import run_member

    call_runner(run_member, args, folds=[int(f) for f in args.folds.split(",")])


def cmd_ensemble(args):
    from flukeline.match.ensemble import run_ensemble

    if len(args.member_dirs) != len(args.member_weights):
        raise InputError(f"{len(args.member_dirs)} member folders but {len(args.member_weights)} weights")
    call_runner(run_ensemble, args)


def cmd_local_match(args):
    from flukeline.match.local_member import run_local_member

    call_runner(run_local_member, args, folds=[int(f) for f in args.folds.split(",")])


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
    add_option(
        p, "--train", "train_path", default=None, help="train.parquet: the date, place and side match.scope reads"
    )
    add_option(p, "--test", "test_path", default=None, help="test.parquet: the test photos' date, place and side")
    add_option(p, "--viewpoints", "viewpoints_path", default=None, help="the viewpoint estimate's viewpoints.parquet")
    add_option(
        p, "--viewpoint-summary", "viewpoint_summary_path", default=None, help="the viewpoint estimate's summary.json"
    )

    p = add_command(
        subparsers,
        "estimate-viewpoints",
        "flukeline.match.viewpoint_estimate:run_estimate_viewpoints",
        "viewpoints of the photos without one, from the labelled photos and the members' embeddings",
    )
    add_required(p, train_path="--train", test_path="--test")
    add_option(
        p,
        "--embeddings",
        "embedding_paths",
        nargs="+",
        required=True,
        help="the round-0 members' embeddings tables, member by member, fold by fold",
    )
    p.add_argument("--members", type=int, required=True, help="how many members the tables are of")
    add_params(p, help="match.scope as JSON")
    p.add_argument("--out", required=True, help="viewpoints.parquet to write")
    add_option(p, "--summary", "summary_out", required=True, help="summary.json to write")

    p = add_command(
        subparsers,
        "decide",
        "flukeline.match.decisions:run_decide",
        "calibrated decisions per test photo: match (auto-accepted), new individual, or review",
    )
    add_option(p, "--val-topk", "val_topk_path", required=True, help="the final ensemble's val_topk.parquet")
    add_option(p, "--test-topk", "test_topk_path", required=True, help="the final ensemble's test_topk.parquet")
    add_option(p, "--ensemble-summary", "ensemble_summary_path", required=True, help="its summary.json (score)")
    add_option(p, "--train", "train_path", required=True, help="train.parquet (folds; encounter column if any)")
    add_option(p, "--test", "test_path", required=True, help="test.parquet (order; encounter column if any)")
    add_params(p, help="match.decision as JSON (auto_accept_precision, auto_new_precision, min_support)")
    p.add_argument("--out", required=True, help="decisions.csv to write")
    add_option(p, "--summary", "summary_out", required=True, help="summary.json to write")
    add_option(p, "--calibration", "calibration_out", required=True, help="calibration.json to write")
    add_option(p, "--figure", "figure_out", required=True, help="reliability.png to write")
    add_option(
        p,
        "--embeddings",
        "embedding_paths",
        nargs="*",
        default=(),
        help="the final round's members' embeddings.parquet (results/embed/round<r>/<member>/fold<k>/): new"
        " individuals grouped (match.decision.new_groups); none: no new_group column",
    )
    add_option(
        p, "--embedding-folds", "embedding_folds", nargs="*", type=int, default=(), help="the fold of each table"
    )

    p = add_command(
        subparsers,
        "local-features",
        "flukeline.match.local_features:run_local_features",
        "local features (SIFT, ALIKED or DISK) of one split's aligned crops, cached for the local member",
    )
    add_required(p, align_path="--align")
    p.add_argument("--split", required=True, choices=["train", "test"])
    p.add_argument("--method", required=True, help="match.local.method (sift, aliked_lightglue, disk_lightglue)")
    p.add_argument("--size", required=True, help="crop size name, WxH")
    add_params(p, help="match.local as JSON")
    p.add_argument("--cache", dest="cache_dir", default=None, help="folder of the per-crop feature cache (optional)")
    p.add_argument("--out", required=True, help=".npz feature cache")
    add_threads(p)

    p = add_command(
        subparsers,
        "photo-features",
        "flukeline.match.photo_features:run_photo_features",
        "local features of one split's photos (their detect boxes), cached per photo",
    )
    add_required(p, photos_path="--photos", boxes_path="--boxes")
    p.add_argument("--split", required=True, choices=["train", "test"])
    p.add_argument("--method", required=True, help="match.local.method (sift, aliked_lightglue, disk_lightglue)")
    add_params(p, help="match.local as JSON")
    p.add_argument("--cache", dest="cache_dir", required=True, help="folder of the per-photo feature cache")
    p.add_argument("--out", required=True, help=".npz feature table of the split")
    add_threads(p)

    p = add_command(
        subparsers,
        "local-match",
        cmd_local_match,
        "the local member: shortlisted pairs matched, calibrated to probabilities, ranked like a member",
    )
    add_required(p, train_path="--train", features_train="--features-train", features_test="--features-test")
    add_option(p, "--members", "member_dirs", nargs="+", required=True, help="global member match folders")
    add_option(
        p, "--weights", "member_weights", nargs="+", type=float, required=True, help="one weight per member folder"
    )
    add_option(
        p,
        "--embeddings",
        "embedding_paths",
        nargs="+",
        required=True,
        help="the members' embeddings tables, member by member, fold by fold",
    )
    p.add_argument("--folds", required=True, help="comma-separated folds, the order of each member's tables")
    add_params(p, help="the ensemble's match settings plus match.local, as JSON")
    add_option(
        p,
        "--test",
        "test_path",
        default=None,
        help="test.parquet: with --train, the date, place and side match.scope reads",
    )
    add_option(p, "--viewpoints", "viewpoints_path", default=None, help="the viewpoint estimate's viewpoints.parquet")
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--cache",
        dest="cache_dir",
        default=None,
        help="folder of the votes and pair scores kept across runs (optional)",
    )
    add_threads(p)
