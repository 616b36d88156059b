import cv2
import numpy as np

from flukeline.align.settings import parse_size
from flukeline.detect.threshold import threshold_box


def test_parse_size():
    assert parse_size("128x64") == (128, 64)


# Crop geometry (box crops, margins, borders) is tested in test_align.py.


def test_threshold_box_finds_a_dark_blob_on_a_row_varying_background():
    height, width = 300, 450
    gradient = np.linspace(60, 200, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(gradient * np.array([0.6, 0.8, 1.0]), (height, width, 3)).astype(np.uint8).copy()
    cv2.ellipse(image, (260, 140), (90, 40), 0, 0, 360, (20, 20, 20), -1)
    box = threshold_box(image)
    assert box.method == "threshold"
    assert abs(box.x0 - 170) <= 6 and abs(box.x1 - 351) <= 6
    assert abs(box.y0 - 100) <= 6 and abs(box.y1 - 181) <= 6


def test_threshold_box_falls_back_to_the_whole_image():
    flat = np.full((50, 80, 3), 128, np.uint8)
    box = threshold_box(flat)
    assert (box.x0, box.y0, box.x1, box.y1, box.method) == (0, 0, 80, 50, "whole_image")


def _write_photo(path, blob_box=None):
    """A sky-to-sea gradient photo, with a dark rectangle (a rock, a head) at blob_box."""
    gradient = np.linspace(60, 200, 200, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(gradient * np.array([0.6, 0.8, 1.0]), (200, 300, 3)).astype(np.uint8).copy()
    if blob_box:
        x0, y0, x1, y1 = blob_box
        image[y0:y1, x0:x1] = 20
    cv2.imwrite(str(path), image)
    return str(path)


def test_the_threshold_log_warns_when_most_boxes_are_small(tmp_path, caplog):
    import logging

    import pandas as pd

    from flukeline.detect.threshold import detect_boxes

    small = [_write_photo(tmp_path / f"s{i}.png", (100 + i, 80, 140 + i, 110)) for i in range(3)]  # 1200 px: 2%
    large = _write_photo(tmp_path / "l.png", (40, 60, 260, 140))  # 29% of the photo
    train = pd.DataFrame({"image": ["s0", "s1", "s2", "l"], "split": "train", "path": small + [large]})
    empty = train.iloc[0:0]
    with caplog.at_level(logging.INFO, logger="flukeline.detect.threshold"):
        table = detect_boxes(train, empty, {"method": "threshold"})
    assert table["method"].tolist() == ["threshold"] * 4
    assert "3 of 4 boxes (75%) cover under 5% of their photo" in caplog.text
    assert "detect.method: none" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flukeline.detect.threshold"):
        detect_boxes(train.iloc[2:], empty, {"method": "threshold"})  # one of two: no warning
    assert "1 of 2 boxes (50%)" in caplog.text and "detect.method: none" not in caplog.text
