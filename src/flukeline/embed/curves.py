"""A member's training curves (results/embed/round<r>/<member>/fold<k>/curves.png, "4 embed" in the
report): training loss and validation MAP@5 per epoch."""

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
