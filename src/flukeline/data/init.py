"""`flukeline init PATH`: a user's folder of photos to a config that runs. Finds (or converts
into) the Kaggle layout (folder_layout), summarises what is in it (folder_report), prints that
with the suggestions (init_config) and writes the config file."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

from flukeline.core.errors import InputError
from flukeline.core.io import write_bytes_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.folder_layout import find_layout
from flukeline.data.folder_report import inspect_folder
from flukeline.data.init_config import WORKFLOW_DIR, choose_preset, config_for, config_text, suggestions

logger = logging.getLogger(__name__)


def init_folder(
    path: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    new_label: str = NEW_WHALE,
    force: bool = False,
    threads: int = 2,
    echo=print,
) -> dict:
    """Inspect `path`, print the summary and suggestions through `echo`, write the config (default:
    `flukeline-<folder name>.yaml` in the current folder); returns the summary with the
    suggestions and the config's path."""
    layout = find_layout(path, out, test, new_label)
    summary = inspect_folder(layout.root, new_label, threads)
    preset, reason = choose_preset(summary)
    advice = suggestions(summary, preset, reason)
    target = Path(config) if config is not None else Path(f"flukeline-{Path(path).resolve().name}.yaml")
    if target.exists() and not force:
        raise InputError(f"{target} exists already: give another --config, or --force to replace it")
    header = [
        f"Written by `flukeline init {path}` on {date.today().isoformat()}"
        + (f" (merged with workflow/presets/{preset}.yaml)" if preset else "")
        + ".",
        f"Run from the project folder: snakemake --cores 2 --configfile {target}",
        "Every other key takes config.yaml's default (README, Configuration).",
    ]
    write_bytes_atomic(target, config_text(config_for(summary, preset), header).encode("utf-8"))
    for line in report_lines(summary, layout) + ["", "suggestions:"] + [f"  {line}" for line in advice]:
        echo(line)
    echo(f"\nwrote {target}; run: snakemake --cores 2 --configfile {target}")
    if not WORKFLOW_DIR.is_dir():
        logger.warning(
            "no workflow/ folder beside the package (%s): run snakemake from the project folder", WORKFLOW_DIR
        )
    return {**summary, "preset": preset, "suggestions": advice, "config": str(target)}


def report_lines(summary: dict, layout) -> list[str]:
    """The summary as a person reads it."""
    lines = []
    if layout.converted_from is not None:
        lines.append(f"converted {layout.converted_from} (one subfolder per individual) into {layout.root}")
        lines += [f"  subfolder {old!r} is Id {new!r}" for old, new in layout.renamed]
    per = summary["photos_per_identity"]
    sizes = summary["sizes"]
    lines += [
        f"data root: {summary['root']}",
        f"training photos: {summary['train_photos']}, test photos: {summary['test_photos']}",
        f"identities: {summary['identities']} ({summary['identities_with_2_or_more']} with 2 or more photos)",
        f"photos per identity: 1: {per['1']}, 2: {per['2']}, 3: {per['3']}, 4: {per['4']}, 5+: {per['5+']}"
        f" (median {per['median']:g}, max {per['max']})",
        f"unknown animals ({summary['unknown_label']}): {summary['unknown_share']:.1%} of the training photos",
    ]
    if sizes:
        lines.append(
            f"photo sizes: median {sizes['median_width']}x{sizes['median_height']}, sides {sizes['min_side']}"
            f"-{sizes['max_side']} px, most common {sizes['most_common']} ({sizes['most_common_share']:.0%})"
        )
    lines.append(f"grayscale photos: {summary['grayscale_share']:.1%}")
    duplicates = summary["duplicates"]
    lines.append(f"exact duplicates: {duplicates['groups']} group(s), {duplicates['photos']} photos")
    lines += [f"  {', '.join(group)}" for group in duplicates["examples"]]
    if summary["missing_train_photos"]:
        missing = summary["missing_train_photos"]
        lines.append(f"missing photos: {len(missing)} train.csv row(s) name no file under train/: {missing[:5]}")
    for row in summary["unreadable"][:10]:
        lines.append(f"unreadable: {row['photo']} {row['problem']}")
    if len(summary["unreadable"]) > 10:
        lines.append(f"unreadable: ... and {len(summary['unreadable']) - 10} more")
    return lines
