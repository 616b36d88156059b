"""Image decoding shared by every stage that reads photos: the whole file is decoded (truncation
shows up only then) into an HxWx3 uint8 RGB array, upright per its EXIF orientation (16-bit,
CMYK, palette and grayscale images become 8-bit RGB; alpha is dropped). Empty, truncated or
undecodable data raise `UnreadableImageError` naming the file.

Phones save HEIC/HEIF by default (Pillow reads it through pi-heif), and field cameras write
RAW files (DNG, CR2, NEF, ...: demosaiced by LibRaw through rawpy, with the camera's white
balance and orientation)."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from flukeline.core.errors import UnreadableImageError

HEIF_SUFFIXES = (".heic", ".heif", ".hif")
try:
    # pi-heif: pillow-heif's decoder-only build (BSD-3-Clause around LGPL libheif and libde265;
    # pillow-heif's wheels also bundle the GPL x265 encoder, which reading never needs).
    import pi_heif
except ImportError:  # pinned in pyproject.toml; an environment without it names the fix per photo
    pi_heif = None
else:
    # Pillow opens HEIC/HEIF from here on. libheif applies the photo's rotation while decoding and
    # pi-heif resets the EXIF orientation, so exif_transpose below never turns a photo twice.
    pi_heif.register_heif_opener()

# Camera RAW formats LibRaw reads. Decided by the name, before Pillow: Pillow would open a DNG, CR2
# or NEF as a TIFF and return the small preview embedded in it, not the photo.
RAW_SUFFIXES = (
    ".dng",
    ".cr2",
    ".cr3",
    ".crw",
    ".nef",
    ".nrw",
    ".arw",
    ".srf",
    ".sr2",
    ".orf",
    ".rw2",
    ".raf",
    ".pef",
    ".srw",
    ".3fr",
    ".erf",
    ".kdc",
    ".mrw",
    ".x3f",
    ".iiq",
    ".rwl",
)
# The file names ingest picks up from a test folder (train.csv may name any file Pillow decodes).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", *HEIF_SUFFIXES, ".tif", ".tiff", ".webp", ".bmp", *RAW_SUFFIXES)
# Formats OpenCV's imread decodes as read_image_rgb does (whole, upright); read_image_gray sends
# every other photo through read_image_rgb (OpenCV reads no HEIC, and only a RAW's preview).
_OPENCV_SUFFIXES = (".jpg", ".jpeg", ".png")

# Integer modes whose values span 16 bits; PIL's own convert("RGB") clips them at 255.
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_image_rgb(data: bytes, source: str) -> np.ndarray:
    """Fully decode image bytes into an HxWx3 uint8 RGB array, upright per its EXIF orientation.

    `source` names the image in the error. Raises UnreadableImageError for empty, truncated or
    undecodable data.
    """
    if not data:
        raise UnreadableImageError(source, "is empty (0 bytes)")
    if PurePath(source).suffix.lower() in RAW_SUFFIXES:
        return _decode_raw(data, source)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # full decode now: truncation only shows up here
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb_array(img)
    except UnidentifiedImageError as exc:
        if pi_heif is None and PurePath(source).suffix.lower() in HEIF_SUFFIXES:
            raise UnreadableImageError(
                source, "is a HEIC/HEIF photo and pi-heif is not installed: run tools/setup.sh (or save it as JPEG)"
            ) from exc
        raise UnreadableImageError(source, "is not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if "truncated" in str(exc).lower():
            raise UnreadableImageError(source, "is truncated (image data ends early)") from exc
        raise UnreadableImageError(source, f"cannot be decoded as an image ({exc})") from exc


def _decode_raw(data: bytes, source: str) -> np.ndarray:
    """A camera RAW file demosaiced by LibRaw: the camera's white balance, 8 bits, upright (LibRaw
    applies the orientation the camera recorded)."""
    suffix = PurePath(source).suffix.lower()
    fix = "or convert the RAW files to TIFF or JPEG (e.g. with darktable or the camera maker's software)"
    try:
        import rawpy
    except ImportError:
        raise UnreadableImageError(
            source, f"is a camera RAW file ({suffix}) and rawpy is not installed: run tools/setup.sh ({fix})"
        ) from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            rgb = raw.postprocess(output_bps=8, use_camera_wb=True)
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise UnreadableImageError(
            source, f"is a camera RAW file ({suffix}) that LibRaw cannot decode ({exc}); {fix.removeprefix('or ')}"
        ) from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


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


def read_image_gray(path: str | os.PathLike) -> np.ndarray:
    """A photo as an HxW uint8 grayscale array, upright: OpenCV's decoder for JPEG and PNG (what
    the local features were measured with), read_image_rgb for every other format."""
    import cv2

    if Path(path).suffix.lower() in _OPENCV_SUFFIXES:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise UnreadableImageError(str(path), "cannot be read or decoded as an image")
        return gray
    return cv2.cvtColor(read_image_rgb(path), cv2.COLOR_RGB2GRAY)


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when all three channels of an HxWx3 image are identical."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 array, got shape {rgb.shape}")
    red, green, blue = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    return bool(np.array_equal(red, green) and np.array_equal(green, blue))
