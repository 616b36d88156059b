"""Atomic writers: every table, CSV, JSON, PNG and byte file of the package is written to a
temporary name beside its target (`.<name>.<uuid>.tmp`) and renamed into place, so readers (and
Snakemake) never see a half-written file and a failed write leaves the previous version intact.
JSON is strict (NaN and inf are refused)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Run `write` on a temporary file beside `path`, then move it into place (the temporary
    name ends in `.tmp`: writers that pick a format from the suffix need it given explicitly).

    Readers (and Snakemake) never see a half-written file, and a failed write leaves the previous
    version intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name rather than mkstemp: mkstemp's 0600 mode would survive the rename.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an HxW or HxWx3 uint8 RGB image as PNG to `path` atomically."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode {path} as PNG")
    write_bytes_atomic(path, encoded.tobytes())


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` (without its index) as Parquet to `path` atomically."""
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_csv_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` (without its index) as CSV to `path` atomically."""
    write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write `obj` as indented, strict JSON (NaN/inf rejected) to `path` atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
