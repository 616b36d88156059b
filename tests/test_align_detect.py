import cv2
import numpy as np
import pytest

from flukeline.align import crop_resize, crop_window, parse_size
from flukeline.detect import threshold_box


def test_parse_size():
    assert parse_size("128x64") == (128, 64)


@pytest.mark.parametrize("box", [(10, 20, 110, 40), (0, 0, 30, 90), (5, 5, 6, 6)])
def test_crop_window_has_output_aspect_and_contains_box_with_margin(box):
    x0, y0, x1, y1 = crop_window(box, (128, 64), margin=0.1)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(2.0)
    bw, bh = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    assert x0 <= box[0] - 0.1 * bw + 1e-9 and x1 >= box[2] + 0.1 * bw - 1e-9
    assert y0 <= box[1] - 0.1 * bh + 1e-9 and y1 >= box[3] + 0.1 * bh - 1e-9
    assert (x0 + x1) / 2 == pytest.approx((box[0] + box[2]) / 2)


def test_crop_resize_maps_the_window_onto_the_output():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 50:90] = 255  # a 40 x 20 white block
    crop = crop_resize(image, (50, 40, 90, 60), (80, 40))  # exactly the block, scaled x2
    assert crop.shape == (40, 80, 3)
    assert crop[2:-2, 2:-2].min() == 255
    # A window reaching outside the photo is filled from its border, not black.
    outside = crop_resize(np.full((10, 10, 3), 200, np.uint8), (-10, -10, 20, 20), (30, 30))
    assert outside.min() == 200


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
