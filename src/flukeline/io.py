"""Small I/O helpers shared by the package: atomic table/JSON writes and robust image decoding."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from flukeline.errors import UnreadableImageError

# Integer modes whose values span 16 bits; PIL's own convert("RGB") clips them at 255.
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


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


def decode_image_rgb(data: bytes, source: str) -> np.ndarray:
    """Fully decode image bytes into an HxWx3 uint8 RGB array, upright per its EXIF orientation.

    `source` names the image in the error. Raises UnreadableImageError for empty, truncated or
    undecodable data.
    """
    if not data:
        raise UnreadableImageError(source, "is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # full decode now: truncation only shows up here
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb_array(img)
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(source, "is not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if "truncated" in str(exc).lower():
            raise UnreadableImageError(source, "is truncated (image data ends early)") from exc
        raise UnreadableImageError(source, f"cannot be decoded as an image ({exc})") from exc


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # direct P->RGB warns about palette transparency
    if img.mode != "RGB":
        img = img.convert("RGB")  # alpha is dropped; L/LA/CMYK/YCbCr/1 are mapped by PIL
    return np.array(img, dtype=np.uint8)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read and fully decode an image file into an HxWx3 uint8 RGB array (EXIF-upright).

    Raises UnreadableImageError (an InputError) naming the path when the file cannot be read,
    is empty, truncated or not an image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImageError(str(path), f"cannot be read ({exc.strerror or exc})") from exc
    return decode_image_rgb(data, str(path))


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when all three channels of an HxWx3 image are identical."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 array, got shape {rgb.shape}")
    red, green, blue = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    return bool(np.array_equal(red, green) and np.array_equal(green, blue))
