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
