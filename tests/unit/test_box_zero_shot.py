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


def test_box_embeddings_are_kept_per_photo_so_a_rerun_embeds_only_new_photos(tmp_path):
    from flukeline.core.photo_cache import file_sha1, stored_keys
    from flukeline.embed.model import save_model
    from flukeline.embed.zero_shot import zero_shot_model
    from flukeline.evaluate.box_zero_shot import box_embeddings

    model, meta = zero_shot_model("mobilenetv2_100", "imagenet")
    model_path = tmp_path / "model.safetensors"
    save_model(model=model, path=model_path, meta={**meta, "size": [32, 32]})
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(["train", "train", "test"]):
        path = tmp_path / f"p{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        rows.append({"image": path.name, "split": split, "path": str(path), "sha1": file_sha1(path)})
    photos = pd.DataFrame(rows)
    train, test = photos[photos["split"] == "train"], photos[photos["split"] == "test"]
    boxes = photos[["image", "split"]].assign(x0=5, y0=5, x1=50, y1=35)
    plain = box_embeddings(model_path, train, test, boxes, size=(32, 32))
    cache = tmp_path / "cache"
    filled = box_embeddings(model_path, train, test, boxes, size=(32, 32), cache_dir=cache)
    assert len(stored_keys(cache)) == 3
    np.testing.assert_allclose(np.stack(filled["embedding"]), np.stack(plain["embedding"]), atol=1e-5)
    # The photos' files gone: every embedding comes back from the cache, bit for bit.
    for path in photos["path"]:
        (tmp_path / path).unlink()
    again = box_embeddings(model_path, train, test, boxes, size=(32, 32), cache_dir=cache)
    np.testing.assert_array_equal(np.stack(again["embedding"]), np.stack(filled["embedding"]))
    # Another box is another entry: that photo is read again (and is gone, so it fails).
    with pytest.raises((OSError, InputError)):
        box_embeddings(model_path, train, test, boxes.assign(x1=51), size=(32, 32), cache_dir=cache)
