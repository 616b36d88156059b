"""The one way the package writes a matplotlib figure: rendered in memory, without a timestamp
(the same data give the same bytes), then moved into place atomically (core.io)."""

from __future__ import annotations

import io
import os

from flukeline.core.io import write_bytes_atomic


def new_figure(*args, **kwargs):
    """matplotlib.pyplot.subplots(...) with the non-interactive Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write `fig` as PNG to `path` atomically and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
