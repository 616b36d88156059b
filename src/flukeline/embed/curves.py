"""Embed stage: train one ensemble member (timm backbone + metric-learning losses) without one
validation fold, and embed every crop (and its mirror image) with it.

The recipe follows the Humpback top solutions (seed 004, 3.3 / 4.3 / 5.3):
- P x K batches (P identities x K images) plus a share of new_whale images as extra negatives;
- margin loss (ArcFace, sub-center ArcFace or CosFace from pytorch-metric-learning) on identified
  images, plus a batch-hard triplet loss on all of them, weights from config;
- flip-as-new-identity: a mirrored fluke is another animal's fluke, so each identity gets a
  mirrored twin class (mirrored new_whale stays new_whale);
- aligned or box-only crop chosen at random per sample; optional mask channel;
- linear warm-up, then cosine or multistep decay; optional staged training (identities with
  enough images first, then all with the early layers frozen); SWA over the last epochs;
  early stopping on the fold's validation MAP@5 (new_whale threshold tuned on that fold).
"""

from __future__ import annotations

import pandas as pd

from flukeline.core.figures import new_figure, save_figure


def plot_curves(history: list[dict], path, title: str) -> None:
    frame = pd.DataFrame(history)
    fig, ax_loss = new_figure(figsize=(6, 3.5))
    ax_loss.plot(frame["epoch"], frame["loss"], color="tab:blue", marker="o", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_map = ax_loss.twinx()
    ax_map.plot(frame["epoch"], frame["val_map5"], color="tab:orange", marker="s", label="validation MAP@5")
    ax_map.set_ylabel("validation MAP@5 (tuned threshold)", color="tab:orange")
    ax_map.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
