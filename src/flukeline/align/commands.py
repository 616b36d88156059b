"""Align stage commands (workflow/rules/align.smk): one transform per image onto the template, then
the crops of every member size. The runners are imported inside the commands, so `--help` stays fast."""

from __future__ import annotations

from flukeline.align.settings import DEFAULT_PADDING, PADDINGS
from flukeline.core.cli_args import (
    add_cache,
    add_command,
    add_option,
    add_params,
    add_required,
    add_threads,
    add_train_test,
)


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "align-transforms",
        "flukeline.align.transforms:run_transforms",
        "per image: landmark (or box) transform onto the template",
    )
    add_train_test(p)
    add_required(p, keypoints_path="--keypoints", boxes_path="--boxes")
    add_params(p, "the align.* settings (JSON)")
    add_option(p, "--out", "table_path", required=True, help="align.parquet to write")
    add_option(
        p, "--contact-sheet", "sheet_path", required=True, help="PNG: photos with landmarks -> aligned and box crops"
    )

    p = add_command(
        subparsers, "align", "flukeline.align.crops:run", "aligned and box crops (and masks) of every image at one size"
    )
    add_train_test(p)
    add_option(p, "--transforms", "transforms_path", required=True, help="align.parquet from align-transforms")
    add_option(p, "--masks", "masks_path", default=None, help="detect's masks.parquet (optional)")
    p.add_argument("--size", required=True, help="WIDTHxHEIGHT")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument(
        "--padding",
        choices=PADDINGS,
        default=DEFAULT_PADDING,
        help="what fills a box crop around the box (align.padding)",
    )
    add_required(p, table_path="--table", crops_dir="--crops")
    add_cache(p)
    add_threads(p)
