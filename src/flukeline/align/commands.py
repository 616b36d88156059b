"""Align stage commands (workflow/rules/align.smk): one transform per image onto the template, then
the crops of every member size. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

from flukeline.align.settings import DEFAULT_PADDING, PADDINGS
from flukeline.core.cli_args import add_command, add_params, add_required, add_threads, add_train_test


def cmd_align_transforms(args):
    from flukeline.align.transforms import run_transforms

    run_transforms(
        train_path=args.train,
        test_path=args.test,
        keypoints_path=args.keypoints,
        boxes_path=args.boxes,
        params=args.params,
        table_path=args.out,
        sheet_path=args.contact_sheet,
    )


def cmd_align(args):
    from flukeline.align.crops import run

    run(
        train_path=args.train,
        test_path=args.test,
        transforms_path=args.transforms,
        masks_path=args.masks,
        size=args.size,
        margin=args.margin,
        table_path=args.table,
        crops_dir=args.crops,
        threads=args.threads,
        padding=args.padding,
    )


def register(subparsers) -> None:
    p = add_command(
        subparsers, "align-transforms", cmd_align_transforms, "per image: landmark (or box) transform onto the template"
    )
    add_train_test(p)
    add_required(p, "--keypoints", "--boxes")
    add_params(p, "the align.* settings (JSON)")
    p.add_argument("--out", required=True, help="align.parquet to write")
    p.add_argument("--contact-sheet", required=True, help="PNG: photos with landmarks -> aligned and box crops")

    p = add_command(subparsers, "align", cmd_align, "aligned and box crops (and masks) of every image at one size")
    add_train_test(p)
    p.add_argument("--transforms", required=True, help="align.parquet from align-transforms")
    p.add_argument("--masks", default=None, help="detect's masks.parquet (optional)")
    p.add_argument("--size", required=True, help="WIDTHxHEIGHT")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument(
        "--padding",
        choices=PADDINGS,
        default=DEFAULT_PADDING,
        help="what fills a box crop around the box (align.padding)",
    )
    add_required(p, "--table", "--crops")
    add_threads(p)
