"""Phone and camera formats (flukeline.core.images): HEIC/HEIF through pi-heif, camera RAW
through rawpy (LibRaw), each made here at test time: a HEIF written by pillow-heif (a test-only
dependency: pi-heif only decodes), a linear DNG
(a real DNG: TIFF with the DNG tags, written by tifffile). No CR2/NEF can be made here (only a
camera writes them): their reading is LibRaw's, the same call as the DNG's, and an undecodable one
is tested for its message."""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers_messy_inputs import write_layout
from PIL import Image, UnidentifiedImageError

from flukeline.core.errors import UnreadableImageError
from flukeline.core.images import decode_image_rgb, read_image_gray, read_image_rgb
from flukeline.data.ingest import ingest


def halves_rgb(height=20, width=40) -> np.ndarray:
    """Left half red, right half blue."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (220, 20, 20)
    rgb[:, width // 2 :] = (20, 20, 220)
    return rgb


def heic_bytes(rgb: np.ndarray) -> bytes:
    import pillow_heif

    # Encoded without registering pillow-heif with Pillow: reading must go through core.images' pi-heif.
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buffer, quality=95)
    return buffer.getvalue()


def linear_dng_bytes(rgb: np.ndarray) -> bytes:
    """A demosaiced ("LinearRaw") DNG of 16-bit linear RGB with an identity colour matrix."""
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion 1.4
        (50708, "s", 0, "Flukeline test camera", True),  # UniqueCameraModel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),  # ColorMatrix1: identity
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral: no white balance change
        (50717, "I", 1, 65535, True),  # WhiteLevel
    ]
    buffer = io.BytesIO()
    linear = rgb.astype(np.uint16) * 257  # 8 -> 16 bits
    tifffile.imwrite(buffer, linear, photometric=34892, planarconfig="contig", extratags=tags, subfiletype=0)
    return buffer.getvalue()


def assert_red_left_blue_right(rgb: np.ndarray, shape: tuple[int, int]):
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, : shape[1] // 2 - 2].reshape(-1, 3).mean(0), rgb[:, shape[1] // 2 + 2 :].reshape(-1, 3).mean(0)
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0], (left, right)


def test_a_heic_photo_decodes_to_rgb_and_gray(tmp_path):
    path = tmp_path / "phone.heic"
    path.write_bytes(heic_bytes(halves_rgb()))
    assert_red_left_blue_right(read_image_rgb(path), (20, 40))
    gray = read_image_gray(path)  # the local features' reader (OpenCV reads no HEIC)
    assert gray.shape == (20, 40) and gray[:, :18].mean() != gray[:, 22:].mean()


def test_a_dng_is_demosaiced_by_libraw(tmp_path):
    path = tmp_path / "camera.dng"
    path.write_bytes(linear_dng_bytes(halves_rgb(32, 48)))
    with pytest.raises(UnidentifiedImageError):  # Pillow alone cannot read it: the RAW route does
        Image.open(path)
    assert_red_left_blue_right(read_image_rgb(path), (32, 48))
    assert read_image_gray(path).shape == (32, 48)  # the local features' reader takes it too


def test_heic_and_dng_photos_are_ingested_from_train_csv_and_the_test_folder(tmp_path):
    files = {"phone.heic": heic_bytes(halves_rgb()), "camera.dng": linear_dng_bytes(halves_rgb(32, 48))}
    test_files = {"t_phone.HEIC": files["phone.heic"], "t_camera.dng": files["camera.dng"]}
    root = write_layout(tmp_path / "data", [("phone.heic", "w_b"), ("camera.dng", "w_b")], files, test_files)
    out = tmp_path / "out"
    ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", {"folds": 2, "min_image_side": 0})
    train = pd.read_parquet(out / "train.parquet").set_index("image")
    assert train.loc["phone.heic", ["width", "height"]].tolist() == [40, 20]
    assert train.loc["camera.dng", ["width", "height"]].tolist() == [48, 32]
    assert {"t_phone.HEIC", "t_camera.dng"} <= set(pd.read_parquet(out / "test.parquet")["image"])


def test_a_raw_file_libraw_cannot_decode_names_the_format_and_the_fix():
    with pytest.raises(UnreadableImageError) as error:
        decode_image_rgb(b"II*\x00 not really a Canon RAW", "IMG_0001.CR2")
    assert error.value.reason.startswith("is a camera RAW file (.cr2) that LibRaw cannot decode (")
    assert error.value.reason.endswith(
        "convert the RAW files to TIFF or JPEG (e.g. with darktable or the camera maker's software)"
    )


def test_without_rawpy_a_raw_file_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now raises ImportError
    with pytest.raises(UnreadableImageError, match=r"is a camera RAW file \(\.nef\) and rawpy is not installed"):
        decode_image_rgb(linear_dng_bytes(halves_rgb()), "DSC_0001.NEF")


def test_without_pi_heif_a_heic_photo_says_how_to_get_it(monkeypatch):
    import flukeline.core.images as images

    data = heic_bytes(halves_rgb())
    monkeypatch.setattr(images, "pi_heif", None)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])  # the opener gone
    with pytest.raises(UnreadableImageError, match=r"is a HEIC/HEIF photo and pi-heif is not installed"):
        decode_image_rgb(data, "IMG_0001.HEIC")
