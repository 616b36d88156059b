"""The synthetic fluke generator: determinism, Kaggle-like distribution, consistent ground truth."""

import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest

from flukeline.data.demo.contact_sheet import contact_sheet
from flukeline.data.demo.generate import build_individual, generate_demo
from flukeline.data.demo.individual import KEYPOINT_NAMES
from flukeline.data.demo.presets import PRESETS, resolve_config

SMALL = {"n_train": 60, "n_test": 20, "max_images_per_id": 8}


def _digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    summary = generate_demo(base / "kaggle", base / "truth" / "test_truth.csv", preset="tiny", seed=3, workers=2)
    return base, summary


def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path):
    generate_demo(tmp_path / "a/kaggle", tmp_path / "a/truth.csv", preset="tiny", seed=7, workers=1, overrides=SMALL)
    generate_demo(tmp_path / "b/kaggle", tmp_path / "b/truth.csv", preset="tiny", seed=7, workers=2, overrides=SMALL)
    generate_demo(tmp_path / "c/kaggle", tmp_path / "c/truth.csv", preset="tiny", seed=8, workers=1, overrides=SMALL)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert len(a) > 2 * (SMALL["n_train"] + SMALL["n_test"])  # images + masks + tables
    assert a == b
    # Another seed draws other animals: most files differ.
    shared = set(a) & set(c)
    assert sum(a[k] == c[k] for k in shared) < 0.1 * len(a)


def test_layout_and_distribution_mimic_kaggle(tiny):
    base, summary = tiny
    root = base / "kaggle"
    train = pd.read_csv(root / "train.csv")
    sample = pd.read_csv(root / "sample_submission.csv")
    cfg = PRESETS["tiny"]
    assert len(train) == cfg["n_train"] and len(sample) == cfg["n_test"]
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(train["Image"])
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(sample["Image"])
    assert abs((train["Id"] == "new_whale").mean() - 0.38) < 0.02
    counts = train.loc[train["Id"] != "new_whale", "Id"].value_counts()
    # Long tail: single-image identities are the most common size, and a few identities are large.
    assert counts.value_counts().idxmax() == 1
    assert counts.max() <= cfg["max_images_per_id"] and counts.max() >= 8
    # Test holds known individuals and new ones.
    truth = pd.read_csv(base / "truth" / "test_truth.csv")
    known = truth["Id"].isin(set(counts.index))
    assert 0.5 < known.mean() < 0.9 and (truth["Id"] == "new_whale").sum() == (~known).sum()
    assert summary["n_train_new_whale"] == (train["Id"] == "new_whale").sum()


def test_grayscale_share_and_varied_frame_sizes(tiny):
    base, _ = tiny
    images = sorted((base / "kaggle" / "train").iterdir()) + sorted((base / "kaggle" / "test").iterdir())
    gray, sizes = 0, set()
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None, path
        gray += image.ndim == 2 or bool(
            np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2])
        )
        sizes.add(image.shape[:2])
    assert abs(gray / len(images) - 0.30) < 0.02
    assert len(sizes) > 20


def test_masks_boxes_and_keypoints_agree(tiny):
    base, _ = tiny
    root = base / "kaggle"
    boxes = pd.read_csv(root / "annotations" / "boxes.csv").set_index("Image")
    keypoints = pd.read_csv(root / "annotations" / "keypoints.csv")
    assert list(keypoints["keypoint"].unique()) == list(KEYPOINT_NAMES[: PRESETS["tiny"]["n_keypoints"]])
    checked_points = 0
    for name, box in boxes.iterrows():
        folder = "train" if (root / "train" / name).exists() else "test"
        image = cv2.imread(str(root / folder / name), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / "annotations" / "masks" / (name[:-4] + ".png")), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert len(xs) > 0, name
        # The box is the mask's bounding box (inclusive pixel bounds, maybe one pixel of slack).
        assert abs(box.x0 - xs.min()) <= 1 and abs(box.y0 - ys.min()) <= 1, name
        assert abs(box.x1 - xs.max()) <= 1 and abs(box.y1 - ys.max()) <= 1, name
        # Visible landmarks lie on the fluke (within a few pixels of the mask: tips are thin).
        near = cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0
        for point in keypoints[(keypoints["Image"] == name) & (keypoints["visible"] == 1)].itertuples():
            x, y = int(round(point.x)), int(round(point.y))
            if 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]:
                checked_points += 1
                assert near[y, x], (name, point.keypoint, x, y)
    assert checked_points > 3 * len(boxes)


def test_test_truth_lives_outside_the_data_root(tiny, tmp_path):
    base, _ = tiny
    root = base / "kaggle"
    assert not any("truth" in p.name for p in root.rglob("*"))
    truth = pd.read_csv(base / "truth" / "test_truth.csv")
    assert sorted(truth["Image"]) == sorted(p.name for p in (root / "test").iterdir())
    with pytest.raises(ValueError, match="outside"):
        generate_demo(tmp_path / "kaggle", tmp_path / "kaggle" / "truth.csv", preset="tiny", overrides=SMALL)


def test_unknown_or_invalid_knob_is_named():
    with pytest.raises(ValueError, match="spray_probability"):
        resolve_config("tiny", {"spray_probability": 0.5})
    with pytest.raises(ValueError, match="grayscale_share"):
        resolve_config("tiny", {"grayscale_share": 1.5})
    with pytest.raises(ValueError, match="preset"):
        resolve_config("huge")
    assert resolve_config("tiny", {"spray_prob": 0.0})["spray_prob"] == 0.0


def test_left_and_right_halves_differ_so_a_mirror_is_another_animal():
    cfg = resolve_config("tiny")
    for individual in range(3):
        animal, other = build_individual(cfg, 0, individual), build_individual(cfg, 0, individual + 10)
        whiteness = animal.whiteness
        # Compare pigmentation where the blade, its mirror image and the other animal all have skin.
        blade = animal.levels[0][..., 3] > 0.5
        on_skin = blade & blade[:, ::-1] & (other.levels[0][..., 3] > 0.5)
        assert on_skin.mean() > 0.1
        mirror_gap = np.abs(whiteness - whiteness[:, ::-1])[on_skin].mean()
        other_gap = np.abs(whiteness - other.whiteness)[on_skin].mean()
        # The mirrored blade is clearly another pattern, of the order of another individual's.
        assert mirror_gap > 0.5 * other_gap > 0.1


def test_contact_sheet_shows_identities(tiny, tmp_path):
    base, _ = tiny
    out = tmp_path / "sheet.png"
    contact_sheet(base / "kaggle", out, n_identities=4, n_sightings=3)
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 200
    assert sheet.std() > 10  # not a blank canvas


def test_photos_knob_scales_a_preset_at_its_train_test_ratio():
    kaggle = resolve_config("kaggle")
    assert (kaggle["n_train"], kaggle["n_test"], kaggle["image_width"]) == (25361, 7960, 1050)
    for photos in (2000, 8000):
        cfg = resolve_config("kaggle", {"photos": photos})
        assert cfg["n_train"] + cfg["n_test"] == photos
        assert cfg["n_train"] / photos == pytest.approx(25361 / (25361 + 7960), abs=1e-3)
    with pytest.raises(ValueError, match="render_scale"):
        resolve_config("tiny", {"render_scale": 0})


def test_render_scale_draws_small_and_keeps_the_photo_size_and_ground_truth(tmp_path):
    # Scenes drawn at 1/3 and resized up: photos at full size, masks and keypoints on the fluke.
    overrides = {**SMALL, "n_train": 12, "n_test": 4, "image_width": 300, "render_scale": 1 / 3}
    generate_demo(tmp_path / "kaggle", tmp_path / "truth.csv", preset="tiny", seed=1, overrides=overrides)
    sizes = pd.read_csv(tmp_path / "truth_attributes.csv")
    keypoints = pd.read_csv(tmp_path / "kaggle" / "annotations" / "keypoints.csv")
    on_mask = []
    for row in sizes.itertuples():
        image = cv2.imread(str(tmp_path / "kaggle" / row.split / row.Image), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / "kaggle" / "annotations" / "masks" / (row.Image[:-4] + ".png")), 0)
        assert image.shape[:2] == mask.shape == (row.height, row.width)
        near = cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0
        for point in keypoints[(keypoints["Image"] == row.Image) & (keypoints["visible"] == 1)].itertuples():
            x, y = int(round(point.x)), int(round(point.y))
            if 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]:
                on_mask.append(near[y, x])
    assert sizes["width"].max() > 250 and len(on_mask) > 30 and np.mean(on_mask) > 0.95
