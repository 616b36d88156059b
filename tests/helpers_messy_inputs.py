"""Messy field data shared by tests/unit/test_robustness_inputs.py (ingest of each case) and
tests/workflow/test_robustness.py (the same images through the real DAG): image makers, the images
that must be accepted with their decoded sizes and pixel checks, and a Kaggle layout writer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# --- image makers --------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_jpeg(seed: int, size=(40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=95)


def exif_rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 high, left half red; EXIF orientation 6: shown rotated 90 degrees
    clockwise, 20 wide x 40 high with the red half on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), "JPEG", quality=100, exif=exif)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.full((12, 20), 40000, np.uint16)), "PNG")


# --- layouts -------------------------------------------------------------------------------------

# Two images of w_a and a new_whale: enough for ingest to accept the rest of a layout.
BASE_TRAIN = [("a1.jpg", "w_a"), ("a2.jpg", "w_a"), ("n1.jpg", "new_whale")]


def write_layout(
    root: Path, rows, files: dict[str, bytes], test_files: dict[str, bytes] | None = None, csv_text: str | None = None
) -> Path:
    """A Kaggle layout: train.csv from `rows` (after BASE_TRAIN) unless `csv_text` is given."""
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    base = {name: noise_jpeg(i) for i, (name, _) in enumerate(BASE_TRAIN)}
    for name, data in {**base, **files}.items():
        (root / "train" / name).write_bytes(data)
    if test_files is None:
        test_files = {"t1.jpg": noise_jpeg(21), "t2.jpg": noise_jpeg(22)}
    for name, data in test_files.items():
        (root / "test" / name).write_bytes(data)
    if csv_text is None:
        csv_text = "Image,Id\n" + "".join(f"{image},{label}\n" for image, label in BASE_TRAIN + list(rows))
    (root / "train.csv").write_text(csv_text, encoding="utf-8")
    return root


# --- images that must be accepted and decoded correctly ------------------------------------------


def check_rgba(rgb):
    assert (rgb == (200, 30, 40)).all()  # alpha dropped, colour kept


def check_cmyk(rgb):
    assert (rgb[..., 1] < 40).all() and (rgb[..., 0] > 215).all() and (rgb[..., 2] > 215).all()  # magenta


def check_sixteen_bit(rgb):
    assert (rgb == 40000 >> 8).all()  # scaled to 8 bits, not clipped at 255


def check_exif(rgb):
    assert (rgb[:15, :, 0] > 200).all() and (rgb[25:, :, 2] > 200).all()  # red on top after rotation


ACCEPTED = {
    # case: (file name, bytes, (width, height) after decoding, grayscale, pixel check)
    "rgba_png": (
        "alpha.png",
        encode(Image.new("RGBA", (24, 16), (200, 30, 40, 128)), "PNG"),
        (24, 16),
        False,
        check_rgba,
    ),
    "cmyk_jpeg": (
        "cmyk.jpg",
        encode(Image.new("CMYK", (30, 20), (0, 255, 0, 0)), "JPEG", quality=100),
        (30, 20),
        False,
        check_cmyk,
    ),
    "sixteen_bit_png": ("deep.png", sixteen_bit_png(), (20, 12), True, check_sixteen_bit),
    "grayscale_jpeg": ("grey.jpg", encode(Image.linear_gradient("L").resize((32, 24)), "JPEG"), (32, 24), True, None),
    "tiny_16x16": ("tiny.jpg", noise_jpeg(31, (16, 16)), (16, 16), False, None),
    "very_wide_6000x400": ("wide.jpg", noise_jpeg(32, (6000, 400)), (6000, 400), False, None),
    "exif_rotated": ("rot.jpg", exif_rotated_jpeg(), (20, 40), False, check_exif),
    "non_ascii_name": ("baleine_é_ø.jpg", noise_jpeg(33), (40, 30), False, None),
}
