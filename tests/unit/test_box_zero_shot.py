"""The whole-box zero-shot reference (evaluate/box_zero_shot.py): the box's pixels at the native
size, clipped to the photo, and a photo without a box named."""

import cv2
import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.evaluate.box_zero_shot import box_pixels, photo_boxes


def test_the_box_is_cut_clipped_and_resized_to_the_native_size(tmp_path):
    photo = np.zeros((60, 100, 3), np.uint8)
    photo[10:30, 20:60] = (255, 0, 0)  # the box's content: pure red in RGB
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), photo[:, :, ::-1])
    inside = box_pixels(path, (20, 10, 60, 30), (32, 16))
    assert inside.shape == (16, 32, 3) and (inside == (255, 0, 0)).all()
    # A box reaching outside the photo is clipped: half of it is the red region, half black.
    clipped = box_pixels(path, (40, 10, 140, 30), (32, 16))
    assert clipped[:, :6, 0].min() == 255 and clipped[:, -6:, 0].max() == 0
    # An empty box after clipping: the whole photo.
    assert box_pixels(path, (200, 200, 300, 300), (100, 60)).shape == (60, 100, 3)


def test_a_photo_without_a_box_is_named():
    train = pd.DataFrame({"image": ["a.jpg"], "split": ["train"], "path": ["a.jpg"]})
    test = pd.DataFrame({"image": ["b.jpg"], "split": ["test"], "path": ["b.jpg"]})
    boxes = pd.DataFrame({"image": ["a.jpg"], "split": ["train"], "x0": [0], "y0": [0], "x1": [5], "y1": [5]})
    with pytest.raises(InputError, match=r"no box for 1 photo\(s\), e\.g\. b\.jpg"):
        photo_boxes(train, test, boxes)
    both = pd.concat([boxes, boxes.assign(image="b.jpg", split="test")])
    assert list(photo_boxes(train, test, both)["image"]) == ["a.jpg", "b.jpg"]
