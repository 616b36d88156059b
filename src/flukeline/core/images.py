"""Image decoding shared by every stage that reads photos: the whole file is decoded (truncation
shows up only then) into an HxWx3 uint8 RGB array, upright per its EXIF orientation (16-bit,
CMYK, palette and grayscale images become 8-bit RGB; alpha is dropped). Empty, truncated or
undecodable data raise `UnreadableImageError` naming the file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from flukeline.core.errors import UnreadableImageError

# Integer modes whose values span 16 bits; PIL's own convert("RGB") clips them at 255.
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


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
