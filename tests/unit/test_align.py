"""Align stage: landmark fits, box fallback, crop geometry and the files the embed stage reads."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flukeline.align.crops import _file_names, crop_images
from flukeline.align.geometry import (
    BOX_COLUMNS,
    FRAME_COLUMNS,
    MATRIX_COLUMNS,
    apply,
    box_crop,
    box_transform,
    crop_matrix,
    crop_region,
    region_to_output,
    template_frame,
    transform_of,
)
from flukeline.align.settings import DEFAULT_TEMPLATE, AlignSettings, parse_size
from flukeline.align.transforms import estimate_transforms
from flukeline.align.warp import warp
from flukeline.cli import main
from flukeline.core.errors import InputError

TEMPLATE = DEFAULT_TEMPLATE
NAMES = list(TEMPLATE)
TEMPLATE_XY = np.array([TEMPLATE[n] for n in NAMES])
FRAME = template_frame(TEMPLATE)


def similarity(scale, degrees, tx, ty):
    """2x3: span frame -> image pixels."""
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty]])


def blobs(width, height, centres, sigma, background=20.0, peak=230.0):
    """Grey RGB image with Gaussian blobs at exact (sub-pixel) centres, pixel centres at integers."""
    image = np.full((height, width), background, np.float32)
    reach = int(math.ceil(5 * sigma))
    for cx, cy in centres:  # each blob drawn in its own window: huge photos stay cheap
        x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
        y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] += (peak - background) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    grey = np.clip(image, 0, 255).round().astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def centroid(grey, guess, radius, background=20.0):
    """Intensity-weighted centre of the blob near guess (re-centred twice, so the window does not
    bias it)."""
    x, y = guess
    for _ in range(3):
        x0, x1 = max(0, int(round(x - radius))), min(grey.shape[1], int(round(x + radius)) + 1)
        y0, y1 = max(0, int(round(y - radius))), min(grey.shape[0], int(round(y + radius)) + 1)
        weights = np.clip(grey[y0:y1, x0:x1].astype(np.float64) - background - 5, 0, None)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        x, y = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
    return x, y


def keypoint_table(image, xy, confidence=1.0, names=NAMES, split="train"):
    conf = np.broadcast_to(np.asarray(confidence, float), (len(names),))
    return pd.DataFrame(
        {
            "image": image,
            "split": split,
            "keypoint": names,
            "x": np.asarray(xy)[:, 0],
            "y": np.asarray(xy)[:, 1],
            "confidence": conf,
        }
    )


def box_around(xy, pad=10, width=None, height=None):
    x0, y0 = np.floor(xy.min(axis=0)) - pad
    x1, y1 = np.ceil(xy.max(axis=0)) + pad + 1
    if width is not None:
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return int(x0), int(y0), int(x1), int(y1)


def transforms_for(image, width, height, keypoints, box, **settings):
    images = pd.DataFrame({"image": [image], "split": ["train"], "width": [width], "height": [height]})
    boxes = pd.DataFrame(
        {
            "image": [image],
            "split": ["train"],
            "x0": [box[0]],
            "y0": [box[1]],
            "x1": [box[2]],
            "y1": [box[3]],
            "method": ["test"],
            "score": [1.0],
        }
    )
    return estimate_transforms(images, keypoints, boxes, AlignSettings.from_params(settings))


def expected_output(out_size, margin=0.1, points=TEMPLATE_XY):
    return apply(region_to_output(crop_region(FRAME, margin, out_size), out_size), points)


# ------------------------------------------------------------------------------------------
# Known transforms are recovered
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, scale, degrees, out_size",
    [
        (800, 500, 300, 20, (512, 256)),
        (800, 500, 300, -33, (128, 64)),  # shrinks 2.8x: anti-aliased path
        (2528, 382, 700, 3, (512, 512)),  # extreme aspect ratio photo
        (240, 160, 90, 0, (512, 256)),  # enlarged
    ],
)
def test_warp_with_a_known_transform_puts_the_landmarks_on_the_template_within_1px(
    width, height, scale, degrees, out_size
):
    to_image = similarity(scale, degrees, width / 2 + 7.3, height / 2 - 0.135 * scale)
    points = apply(to_image, TEMPLATE_XY)
    sigma = max(2.5, 0.012 * scale)
    photo = blobs(width, height, points, sigma)
    box = box_around(points, 5, width, height)
    table = transforms_for("a.jpg", width, height, keypoint_table("a.jpg", points), box)
    row = table.iloc[0]
    assert row["method"] == "landmarks" and row["reason"] == "ok" and row["n_landmarks"] == 6
    assert row["residual"] < 1e-6
    assert row["span_px"] == pytest.approx(scale) and row["rotation_deg"] == pytest.approx(degrees, abs=1e-4)
    matrix = crop_matrix(transform_of(row), FRAME, 0.1, out_size)
    expected = expected_output(out_size)
    np.testing.assert_allclose(apply(matrix, points), expected, atol=1e-3)  # the geometry
    crop = warp(photo, matrix, out_size)  # and the pixels: OpenCV's conventions agree
    assert crop.shape == (out_size[1], out_size[0], 3)
    out_sigma = sigma * matrix[0, 0] / math.cos(math.radians(degrees))
    for target in expected:
        found = centroid(crop[:, :, 0], target, radius=max(4, 3 * out_sigma))
        assert np.hypot(*(np.subtract(found, target))) < 1.0, (found, target)


def test_affine_setting_recovers_a_sheared_pose():
    to_image = np.array([[260.0, 40.0, 400.0], [-25.0, 180.0, 240.0]])  # foreshortened and sheared
    points = apply(to_image, TEMPLATE_XY)
    photo = blobs(800, 500, points, 3.0)
    keypoints = keypoint_table("a.jpg", points)
    box = box_around(points)
    row = transforms_for("a.jpg", 800, 500, keypoints, box, transform="affine").iloc[0]
    assert row["method"] == "landmarks" and row["residual"] < 1e-6
    matrix = crop_matrix(transform_of(row), FRAME, 0.1, (512, 256))
    crop = warp(photo, matrix, (512, 256))
    for target in expected_output((512, 256)):
        assert np.hypot(*np.subtract(centroid(crop[:, :, 0], target, 12), target)) < 1.0
    # A similarity cannot absorb the shear: the same landmarks leave a residual.
    similar = transforms_for("a.jpg", 800, 500, keypoints, box, transform="similarity").iloc[0]
    assert similar["residual"] > 0.01


def test_an_outlying_landmark_is_left_out_of_the_fit():
    to_image = similarity(250, 10, 400, 250)
    points = apply(to_image, TEMPLATE_XY)
    wrong = points.copy()
    wrong[NAMES.index("peduncle")] += (0, 0.4 * 250)  # mislocated by 0.4 span
    row = transforms_for("a.jpg", 800, 500, keypoint_table("a.jpg", wrong), box_around(points)).iloc[0]
    assert row["method"] == "landmarks" and row["n_landmarks"] == 5
    np.testing.assert_allclose(apply(transform_of(row), points[:5]), TEMPLATE_XY[:5], atol=1e-4)


def test_noisy_landmarks_fit_in_least_squares():
    rng = np.random.default_rng(0)
    to_image = similarity(250, -5, 400, 250)
    noisy = apply(to_image, TEMPLATE_XY) + rng.normal(0, 3, (6, 2))  # ~0.01 span
    row = transforms_for("a.jpg", 800, 500, keypoint_table("a.jpg", noisy), box_around(noisy)).iloc[0]
    assert row["method"] == "landmarks" and row["n_landmarks"] == 6
    assert 0.002 < row["residual"] < 0.03
    assert row["span_px"] == pytest.approx(250, rel=0.03)


# ------------------------------------------------------------------------------------------
# Fallback to the box
# ------------------------------------------------------------------------------------------


def _fit(xy, confidence=1.0, box=None, names=NAMES, **settings):
    xy = np.asarray(xy, float)
    if box is None:
        box = box_around(xy[np.isfinite(xy).all(axis=1)] if np.isfinite(xy).any() else np.zeros((1, 2)))
    return transforms_for("a.jpg", 4000, 3000, keypoint_table("a.jpg", xy, confidence, names), box, **settings).iloc[0]


GOOD = apply(similarity(250, 0, 500, 300), TEMPLATE_XY)


def test_low_confidence_keypoints_fall_back_to_the_box():
    row = _fit(GOOD, confidence=0.2)
    assert (row["method"], row["reason"], row["n_landmarks"]) == ("box", "few_landmarks", 0)
    box = (row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"])
    np.testing.assert_allclose(transform_of(row), box_transform(box, FRAME))
    assert math.isnan(row["residual"])
    # Two confident landmarks are fewer than min_landmarks (3) ...
    row = _fit(GOOD, confidence=[1, 0.1, 1, 0.1, 0.1, 0.1])
    assert (row["method"], row["n_landmarks"]) == ("box", 2)
    # ... unless the config allows a two-point similarity.
    assert _fit(GOOD, confidence=[1, 0.1, 1, 0.1, 0.1, 0.1], min_landmarks=2)["method"] == "landmarks"
    # Missing coordinates count as unusable whatever their confidence.
    nan = GOOD.copy()
    nan[1:] = np.nan
    assert _fit(nan, box=box_around(GOOD))["reason"] == "few_landmarks"


def test_images_without_keypoint_rows_use_their_box():
    images = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "split": ["train", "test"], "width": 100, "height": 50})
    boxes = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg"],
            "split": ["train", "test"],
            "x0": [10, 0],
            "y0": [5, 0],
            "x1": [60, 100],
            "y1": [30, 50],
            "method": "t",
            "score": 1.0,
        }
    )
    keypoints = keypoint_table("zzz.jpg", GOOD)  # another image's keypoints only
    table = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    assert table["method"].tolist() == ["box", "box"] and table["image"].tolist() == ["a.jpg", "b.jpg"]
    # The box crop maps the box's centre onto the template frame's centre at one scale.
    transform = transform_of(table.iloc[0])
    centre = apply(transform, [[(10 + 60 - 1) / 2, (5 + 30 - 1) / 2]])[0]
    np.testing.assert_allclose(centre, [(FRAME[0] + FRAME[2]) / 2, (FRAME[1] + FRAME[3]) / 2])
    assert transform[0, 1] == transform[1, 0] == 0 and transform[0, 0] == transform[1, 1]
    with pytest.raises(ValueError, match="no box"):
        estimate_transforms(images, keypoints, boxes.iloc[:1], AlignSettings.from_params({}))


def test_implausible_fits_fall_back_to_the_box():
    rng = np.random.default_rng(1)
    assert _fit(rng.uniform(100, 900, (6, 2)))["method"] == "box"  # no fluke shape
    # Landmarks from the middle of the fluke only (no tip) leave its span to chance.
    assert _fit(GOOD, confidence=[0, 1, 0, 1, 0, 1])["reason"] == "coverage"
    assert _fit(GOOD, confidence=[1, 1, 0, 1, 0, 0])["method"] == "landmarks"  # one side, tip to notch
    assert _fit(np.full((6, 2), 300.0), box=(250, 250, 350, 350))["reason"] == "degenerate"  # one point
    mirrored = GOOD[[2, 1, 0, 4, 3, 5]]  # left and right swapped
    # The trailing edge fits well upside down (the peduncle is then an outlier): not a pose.
    assert _fit(mirrored)["reason"] == "rotation"
    assert _fit(mirrored, max_rotation_deg=180)["method"] == "landmarks"
    assert _fit(mirrored, transform="affine")["reason"] == "degenerate"
    # A box ten times the landmarks' fluke: they disagree on the scale ...
    big = (0, 0, 2600, 1000)
    assert _fit(GOOD, box=big)["reason"] == "scale"
    # (only the width counts: how much body and water a box includes below the fluke varies)
    x0, _, x1, _ = box_around(GOOD)
    assert _fit(GOOD, box=(x0, 0, x1, 2900))["method"] == "landmarks"
    # ... but a whole-image box (detect found nothing) says nothing about it.
    row = transforms_for("a.jpg", 2600, 1000, keypoint_table("a.jpg", GOOD), big).iloc[0]
    assert row["method"] == "landmarks"
    # Looser limits accept what the defaults reject.
    assert _fit(GOOD, box=big, max_scale_ratio=20)["method"] == "landmarks"


def test_keypoints_outside_the_template_are_ignored():
    extra = np.vstack([GOOD, [[0, 0]]])
    row = _fit(extra, names=NAMES + ["dorsal_fin"], box=box_around(GOOD))
    assert row["method"] == "landmarks" and row["n_landmarks"] == 6 and row["residual"] < 1e-6
    # Template points the detector does not provide neither count nor widen the frame.
    template = {**TEMPLATE, "left_leading_mid": (-0.33, 0.5)}
    row = _fit(GOOD, box=box_around(GOOD), template=template)
    assert row["method"] == "landmarks"
    assert (row["frame_x0"], row["frame_y0"], row["frame_x1"], row["frame_y1"]) == FRAME


def test_settings_are_checked():
    with pytest.raises(InputError, match="transform"):
        AlignSettings.from_params({"transform": "projective"})
    with pytest.raises(InputError, match="unknown"):
        AlignSettings.from_params({"marginn": 0.1})
    assert AlignSettings.from_params({"transform": "affine", "min_landmarks": 2}).min_points == 3


# ------------------------------------------------------------------------------------------
# Crop geometry
# ------------------------------------------------------------------------------------------


def test_the_recorded_box_transform_centres_the_box_in_the_template_frame():
    # An image without a landmark fit records its box's place in the span frame (align.parquet's
    # t00..t12, span_px); its crops are box crops, which know no frame (below).
    box = (10, 20, 110, 40)
    transform = box_transform(box, FRAME)
    (u0, v0), (u1, v1) = apply(transform, [[box[0] - 0.5, box[1] - 0.5], [box[2] - 0.5, box[3] - 0.5]])
    assert (u0 + u1) / 2 == pytest.approx((FRAME[0] + FRAME[2]) / 2)
    assert (v0 + v1) / 2 == pytest.approx((FRAME[1] + FRAME[3]) / 2)
    shares = ((u1 - u0) / (FRAME[2] - FRAME[0]), (v1 - v0) / (FRAME[3] - FRAME[1]))
    assert max(shares) == pytest.approx(1.0) and min(shares) <= 1 + 1e-9


@pytest.mark.parametrize("box", [(10, 20, 110, 40), (0, 0, 30, 90), (5, 5, 6, 6), (0, 0, 2528, 382)])
@pytest.mark.parametrize("out_size", [(128, 64), (512, 512), (64, 32)])
def test_box_crop_keeps_the_whole_box_centred_with_its_margin_unstretched(box, out_size):
    # The box grown by the margin (10% of the box on each side) fills the crop in one dimension
    # at one scale, centred: the box's own aspect, not the template frame's (test_crop_geometry.py
    # renders it).
    geometry = box_crop(box, 0.1, out_size)
    matrix = geometry.matrix
    assert matrix[0, 0] == pytest.approx(matrix[1, 1]) and matrix[0, 1] == matrix[1, 0] == 0
    (x0, y0), (x1, y1) = apply(matrix, [[box[0] - 0.5, box[1] - 0.5], [box[2] - 0.5, box[3] - 0.5]])
    width, height = out_size
    assert abs((x0 + x1) / 2 - (width / 2 - 0.5)) <= 0.5 and abs((y0 + y1) / 2 - (height / 2 - 0.5)) <= 0.5
    assert x1 - x0 <= width / 1.2 + 1e-6 and y1 - y0 <= height / 1.2 + 1e-6
    assert max((x1 - x0) * 1.2 / width, (y1 - y0) * 1.2 / height) == pytest.approx(1.0)
    box_w, box_h = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(box_w / box_h)
    # The content rectangle (the rest is align.padding) is the grown box in whole pixels.
    left, top, w, h = geometry.content
    assert abs(w - 1.2 * (x1 - x0)) <= 1 and abs(h - 1.2 * (y1 - y0)) <= 1
    assert 0 <= left and left + w <= width and 0 <= top and top + h <= height


def test_warp_outside_the_photo_replicates_its_border_and_blanks_masks():
    # Aligned crops keep the warp's replicated border; box crops never show it (test_crop_geometry.py).
    photo = np.full((10, 10, 3), 200, np.uint8)
    matrix = crop_matrix(box_transform((-20, -20, 30, 30), FRAME), FRAME, 0.1, (64, 32))
    assert warp(photo, matrix, (64, 32)).min() == 200
    mask = np.full((10, 10), 255, np.uint8)
    warped = warp(mask, matrix, (64, 32), cv2.BORDER_CONSTANT, 0)
    assert warped.max() == 255 and warped.min() == 0


def test_heavy_shrinking_is_anti_aliased():
    # A one-pixel checkerboard shrunk 10x must become mid-grey, not a moire of black and white.
    checker = ((np.indices((1000, 2000)).sum(axis=0) % 2) * 255).astype(np.uint8)
    matrix = np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    out = warp(checker, matrix, (200, 100))
    assert abs(float(out[5:-5, 5:-5].mean()) - 127.5) < 3 and out[5:-5, 5:-5].std() < 3


# ------------------------------------------------------------------------------------------
# Files: crops, masks, odd photos, determinism, CLI
# ------------------------------------------------------------------------------------------


def _scene(tmp_path, name, width, height, to_image, mode="RGB", confidence=1.0, split="train", mask=True):
    """A photo (and its mask) with a bright fluke-like ellipse and blobs at the landmarks."""
    points = apply(to_image, TEMPLATE_XY)
    scale = math.sqrt(abs(np.linalg.det(to_image[:, :2])))
    photo = blobs(width, height, points, max(1.0, 0.01 * scale))
    fluke = np.zeros((height, width), np.uint8)
    centre = apply(to_image, [[0.0, 0.1]])[0]
    angle = math.degrees(math.atan2(to_image[1, 0], to_image[0, 0]))
    axes = (max(1, int(0.5 * scale)), max(1, int(0.12 * scale)))
    cv2.ellipse(fluke, (int(round(centre[0])), int(round(centre[1]))), axes, angle, 0, 360, 255, -1)
    photo[fluke > 0] = (250, 180, 60)
    path = tmp_path / name
    image = Image.fromarray(photo)
    (image.convert("L") if mode == "L" else image).save(path)
    mask_path = None
    if mask:
        mask_path = tmp_path / f"{path.stem}_mask.png"
        cv2.imwrite(str(mask_path), fluke)
    box = box_around(points, 2, width, height)
    return {
        "image": name,
        "split": split,
        "path": str(path),
        "width": width,
        "height": height,
        "box": box,
        "keypoints": keypoint_table(name, points, confidence, split=split),
        "mask": None if mask_path is None else str(mask_path),
    }


def _tables(scenes):
    images = pd.DataFrame([{k: s[k] for k in ("image", "split", "path", "width", "height")} for s in scenes])
    boxes = pd.DataFrame(
        [
            {
                "image": s["image"],
                "split": s["split"],
                "x0": s["box"][0],
                "y0": s["box"][1],
                "x1": s["box"][2],
                "y1": s["box"][3],
                "method": "test",
                "score": 1.0,
            }
            for s in scenes
        ]
    )
    keypoints = pd.concat([s["keypoints"] for s in scenes], ignore_index=True)
    masks = pd.DataFrame(
        {
            "image": [s["image"] for s in scenes],
            "split": [s["split"] for s in scenes],
            "mask_path": pd.Series([s["mask"] for s in scenes], dtype="string"),
            "area": [0 if s["mask"] is None else 100 for s in scenes],
            "score": 1.0,
        }
    )
    return images, boxes, keypoints, masks


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_crops_of_tiny_huge_extreme_and_grayscale_photos(tmp_path):
    scenes = [
        _scene(tmp_path, "tiny.png", 5, 3, similarity(4, 0, 2, 1), confidence=0.0),  # box fallback
        _scene(tmp_path, "tinylm.png", 9, 5, similarity(8, 0, 4, 1.5)),  # landmarks on a 9x5 photo
        _scene(tmp_path, "huge.jpg", 6000, 4000, similarity(3000, 8, 3000, 1700)),
        _scene(tmp_path, "wide.jpg", 2528, 382, similarity(700, -3, 1264, 150)),
        _scene(tmp_path, "tall.jpg", 382, 2528, similarity(300, 0, 191, 1264)),
        _scene(tmp_path, "grey.png", 300, 200, similarity(200, 12, 150, 80), mode="L", split="test", mask=False),
    ]
    images, boxes, keypoints, masks = _tables(scenes)
    transforms = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    assert transforms.set_index("image")["method"].to_dict() == {
        "tiny.png": "box",
        "tinylm.png": "landmarks",
        "huge.jpg": "landmarks",
        "wide.jpg": "landmarks",
        "tall.jpg": "landmarks",
        "grey.png": "landmarks",
    }
    for size in ("64x32", "512x512"):
        width, height = parse_size(size)
        table = crop_images(images, transforms, masks, size, 0.1, tmp_path / size)
        assert table["image"].tolist() == images["image"].tolist()
        for row in table.itertuples():
            for path in (row.crop_path, row.box_crop_path):
                assert _read(path).shape == (height, width, 3)  # grayscale photos too
            if row.image == "grey.png":
                crop = _read(row.crop_path)
                assert np.array_equal(crop[:, :, 0], crop[:, :, 2])
            # Every photo has a mask crop, the one without a mask its box's (see below).
            assert _read(row.mask_crop_path).shape == _read(row.box_mask_crop_path).shape == (height, width)
            assert (row.crop_path == row.box_crop_path) == (row.method == "box")
    # The huge photo's aligned crop shows the fluke centred where the template says.
    table = crop_images(images, transforms, masks, "128x64", 0.1, tmp_path / "again")
    huge = table.set_index("image").loc["huge.jpg"]
    mask = _read(huge["mask_crop_path"])
    ys, xs = np.nonzero(mask > 127)
    expected = expected_output((128, 64), points=[[0.0, 0.1]])[0]
    assert abs(xs.mean() - expected[0]) < 1.0 and abs(ys.mean() - expected[1]) < 1.0


def test_masks_are_warped_with_their_crops(tmp_path):
    scenes = [
        _scene(tmp_path, "a.jpg", 640, 400, similarity(300, 15, 330, 170)),
        _scene(tmp_path, "b.jpg", 640, 400, similarity(260, -8, 300, 200), confidence=0.0),
    ]
    images, boxes, keypoints, masks = _tables(scenes)
    # Masks at half resolution are rescaled onto the photo.
    half = tmp_path / "b_half.png"
    full = _read(scenes[1]["mask"])
    cv2.imwrite(str(half), cv2.resize(full, (320, 200), interpolation=cv2.INTER_AREA))
    masks.loc[1, "mask_path"] = str(half)
    transforms = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    table = crop_images(images, transforms, masks, "256x128", 0.1, tmp_path / "crops")
    for row in table.itertuples():
        for crop_path, mask_path in ((row.crop_path, row.mask_crop_path), (row.box_crop_path, row.box_mask_crop_path)):
            crop, mask = _read(crop_path), _read(mask_path)
            fluke = (crop[:, :, 0] < 120) & (crop[:, :, 2] > 200)  # the ellipse's colour (BGR)
            inside = mask > 127
            iou = (fluke & inside).sum() / (fluke | inside).sum()
            assert iou > 0.9, (row.image, iou)


def test_a_photo_whose_predicted_mask_is_empty_has_its_box_as_mask(tmp_path):
    # The tiny preset's 4-channel member stopped on such a photo ("mask crop missing").
    scenes = [
        _scene(tmp_path, "a.jpg", 640, 400, similarity(300, 15, 330, 170)),
        _scene(tmp_path, "b.jpg", 640, 400, similarity(260, -8, 300, 200), confidence=0.0),
    ]
    images, boxes, keypoints, masks = _tables(scenes)
    masks.loc[1, "area"] = 0  # detect wrote an all-zero PNG
    cv2.imwrite(masks.loc[1, "mask_path"], np.zeros((400, 640), np.uint8))
    transforms = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # warped, stored, then read back
        table = crop_images(images, transforms, masks, "256x128", 0.1, tmp_path / "crops", cache_dir=cache)
        row = table.set_index("image").loc["b.jpg"]
        assert row["method"] == "box" and row["mask_crop_path"] == row["box_mask_crop_path"]
        mask = _read(row["box_mask_crop_path"]) > 127
        # The box's corners mapped into the box crop: the rectangle the mask fills.
        crop = box_crop(scenes[1]["box"], 0.1, (256, 128), (640, 400))
        x0, y0, x1, y1 = scenes[1]["box"]
        (u0, v0), (u1, v1) = apply(crop.matrix, [[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5]])
        expected = np.zeros_like(mask)
        expected[int(round(v0)) : int(round(v1)), int(round(u0)) : int(round(u1))] = True
        assert (mask & expected).sum() / (mask | expected).sum() > 0.9
    # The CLI's embed stage reads a mask crop for every photo.
    from flukeline.embed.crops import CropSet

    crops = CropSet(table, box_crops=True, masks=True)
    assert all(crops.get(i, box)[1].shape == (128, 256) for i in range(2) for box in (False, True))


def test_crops_are_deterministic_and_independent_of_workers(tmp_path):
    scenes = [_scene(tmp_path, f"{i}.jpg", 320, 200, similarity(150 + 10 * i, 5 * i - 10, 160, 90)) for i in range(6)]
    images, boxes, keypoints, masks = _tables(scenes)
    first = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    second = estimate_transforms(images, keypoints.sample(frac=1, random_state=0), boxes, AlignSettings.from_params({}))
    pd.testing.assert_frame_equal(first, second)
    one = crop_images(images, first, masks, "64x32", 0.1, tmp_path / "one", threads=1)
    two = crop_images(images, first, masks, "64x32", 0.1, tmp_path / "two", threads=2)
    for column in ("crop_path", "box_crop_path", "mask_crop_path", "box_mask_crop_path"):
        for a, b in zip(one[column], two[column]):
            assert a != b and open(a, "rb").read() == open(b, "rb").read()


def test_crop_file_names_stay_unique():
    images = pd.DataFrame({"image": ["a.jpg", "a.png", "b.jpg", "a.jpg"], "split": ["train", "train", "train", "test"]})
    assert _file_names(images) == ["a_jpg.png", "a_png.png", "b.png", "a.png"]


def test_cli_writes_the_tables_crops_and_contact_sheet(tmp_path):
    scenes = [
        _scene(
            tmp_path,
            f"{i}.jpg",
            320,
            200,
            similarity(150, 10 * i - 20, 160, 90),
            confidence=1.0 if i < 4 else 0.1,
            split="train" if i % 2 else "test",
        )
        for i in range(6)
    ]
    images, boxes, keypoints, masks = _tables(scenes)
    paths = {}
    for name, df in (
        ("train", images[images["split"] == "train"]),
        ("test", images[images["split"] == "test"]),
        ("boxes", boxes),
        ("keypoints", keypoints),
        ("masks", masks),
    ):
        paths[name] = tmp_path / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    out = tmp_path / "results/align"
    params = (
        '{"template": {"left_tip": [-0.5, -0.06], "notch": [0, 0.04], "right_tip": [0.5, -0.06], '
        '"left_trailing_mid": [-0.25, -0.035], "right_trailing_mid": [0.25, -0.035], "peduncle": [0, 0.33]}, '
        '"transform": "similarity", "margin": 0.1}'
    )
    assert (
        main(
            [
                "align-transforms",
                "--train",
                str(paths["train"]),
                "--test",
                str(paths["test"]),
                "--keypoints",
                str(paths["keypoints"]),
                "--boxes",
                str(paths["boxes"]),
                "--params",
                params,
                "--out",
                str(out / "align.parquet"),
                "--contact-sheet",
                str(out / "contact_sheet.png"),
            ]
        )
        == 0
    )
    transforms = pd.read_parquet(out / "align.parquet")
    assert set(MATRIX_COLUMNS + BOX_COLUMNS + FRAME_COLUMNS) < set(transforms.columns)
    assert transforms["method"].value_counts().to_dict() == {"landmarks": 4, "box": 2}
    sheet = _read(out / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[0] > 100
    assert (
        main(
            [
                "align",
                "--train",
                str(paths["train"]),
                "--test",
                str(paths["test"]),
                "--transforms",
                str(out / "align.parquet"),
                "--masks",
                str(paths["masks"]),
                "--size",
                "64x32",
                "--margin",
                "0.1",
                "--table",
                str(out / "64x32/align.parquet"),
                "--crops",
                str(out / "64x32/crops"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    table = pd.read_parquet(out / "64x32/align.parquet")
    assert list(table.columns) == [
        "image",
        "split",
        "method",
        "n_landmarks",
        "residual",
        "crop_path",
        "box_crop_path",
        "mask_crop_path",
        "box_mask_crop_path",
    ]
    assert len(table) == 6 and all(_read(p).shape == (32, 64, 3) for p in table["crop_path"])
