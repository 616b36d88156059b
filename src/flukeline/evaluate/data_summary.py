"""The data summary figure for Snakemake's HTML report (the `data_summary` rule,
results/data/summary.png, "1 data"): train images per identity (new_whale counted apart, 18 and
more in one bar), image sizes, and the grayscale share of train and test, from the ingest tables."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.figures import new_figure, save_figure
from flukeline.core.metrics import NEW_WHALE

log = logging.getLogger(__name__)

# Identities with at least this many train images share the histogram's last bar (as in the
# seed report's table of class sizes, "18 +").
MAX_IMAGES_BAR = 18

IMAGE_COLUMNS = ("width", "height", "grayscale")


def _read_table(path, columns) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the image table ({error})") from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (ingest writes them)")
    return table


def data_counts(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """The numbers the data summary figure shows (JSON-friendly)."""
    ids = train["id"].astype(str)
    per_identity = ids[ids != NEW_WHALE].value_counts()
    by_images = per_identity.value_counts().sort_index()
    sizes = {
        name: table.groupby(["width", "height"]).size().rename("images").reset_index()
        for name, table in (("train", train), ("test", test))
    }
    return {
        "n_train": len(train),
        "n_test": len(test),
        "n_identities": int(len(per_identity)),
        "new_whale_images": int((ids == NEW_WHALE).sum()),
        # {images of an identity: number of identities with that many}
        "identities_by_images": {int(k): int(v) for k, v in by_images.items()},
        "grayscale_images": {"train": int(train["grayscale"].sum()), "test": int(test["grayscale"].sum())},
        "grayscale_share": {
            "train": float(train["grayscale"].mean()) if len(train) else 0.0,
            "test": float(test["grayscale"].mean()) if len(test) else 0.0,
        },
        "distinct_sizes": {name: int(len(s)) for name, s in sizes.items()},
        "most_common_size": {
            name: [int(s.loc[s["images"].idxmax(), "width"]), int(s.loc[s["images"].idxmax(), "height"])]
            if len(s)
            else None
            for name, s in sizes.items()
        },
    }


def plot_data_summary(train: pd.DataFrame, test: pd.DataFrame, path) -> dict:
    """Write the three-panel data summary PNG to `path`; returns data_counts()."""
    counts = data_counts(train, test)
    colours = {"train": "tab:pink", "test": "tab:green"}
    fig, (ax_ids, ax_sizes, ax_gray) = new_figure(
        1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.4, 1.2, 0.7]}
    )

    # (a) Identities by number of train images; new_whale is not an identity, counted apart.
    by_images = counts["identities_by_images"]
    # Every count from 1 on gets its bar, empty ones too, so the x axis reads as a histogram.
    largest = min(max(by_images, default=1), MAX_IMAGES_BAR - 1)
    bars = {str(k): by_images.get(k, 0) for k in range(1, largest + 1)}
    many = sum(v for k, v in by_images.items() if k >= MAX_IMAGES_BAR)
    if many:
        bars[f"{MAX_IMAGES_BAR}+"] = many
    ax_ids.bar(range(len(bars)), list(bars.values()), color="tab:blue", tick_label=list(bars))
    ax_ids.set_xlabel("train images of the identity")
    ax_ids.set_ylabel("identities")
    new_share = counts["new_whale_images"] / counts["n_train"] if counts["n_train"] else 0.0
    ax_ids.set_title(f"{counts['n_identities']} identities in {counts['n_train']} train images")
    ax_ids.text(
        0.98,
        0.95,
        f"{NEW_WHALE}: {counts['new_whale_images']} images\n({new_share:.0%} of train, not an identity)",
        transform=ax_ids.transAxes,
        ha="right",
        va="top",
        bbox={"facecolor": "white", "edgecolor": "grey"},
    )

    # (b) Image sizes: one marker per distinct width x height, its area growing with log(images).
    for name, table in (("train", train), ("test", test)):
        sizes = table.groupby(["width", "height"]).size()
        if len(sizes):
            ax_sizes.scatter(
                sizes.index.get_level_values("width"),
                sizes.index.get_level_values("height"),
                s=12 + 30 * np.log1p(sizes.to_numpy()),
                alpha=0.5,
                color=colours[name],
                label=f"{name}: {len(table)} images, {len(sizes)} sizes",
            )
    ax_sizes.set_xlabel("width (px)")
    ax_sizes.set_ylabel("height (px)")
    ax_sizes.set_title("image sizes (marker area ~ log images)")
    ax_sizes.legend(loc="best", fontsize="small")

    # (c) Grayscale share per split.
    names = ["train", "test"]
    shares = [counts["grayscale_share"][n] for n in names]
    ax_gray.bar(names, shares, color=[colours[n] for n in names])
    for i, name in enumerate(names):
        ax_gray.text(
            i, shares[i], f"{shares[i]:.0%}\n({counts['grayscale_images'][name]} images)", ha="center", va="bottom"
        )
    ax_gray.set_ylim(0, 1)
    ax_gray.set_ylabel("grayscale share")
    ax_gray.set_title("grayscale images")

    fig.tight_layout()
    save_figure(fig, path)
    return counts


def run_data_summary(train_path, test_path, out_path) -> dict:
    train = _read_table(train_path, ("id", *IMAGE_COLUMNS))
    test = _read_table(test_path, IMAGE_COLUMNS)
    counts = plot_data_summary(train, test, out_path)
    log.info("data summary: %s", json.dumps(counts))
    return counts
