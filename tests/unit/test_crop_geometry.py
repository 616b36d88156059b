"""Box crops (no landmark fit): the box grown by the margin keeps its aspect, centred in the crop,
with align.padding around it (context, constant or reflect) and never a smeared photo edge; on
extreme photo shapes, on a box inside the photo and on one touching its edge; and the files
crop_images writes (masks padded with 0)."""

import cv2
import numpy as np
import pandas as pd
import pytest

from flukeline.align.crops import crop_images
from flukeline.align.geometry import box_crop, box_window
from flukeline.align.settings import AlignSettings
from flukeline.align.transforms import estimate_transforms
from flukeline.align.warp import warp_box_crop
from flukeline.core.errors import InputError

RED = (255, 0, 0)
PADDINGS = ("context", "constant", "reflect")


def gradient_photo(width, height):
    """RGB photo whose every row and column differs (a replicated edge would show) and whose
    pixels are never 0 (the constant padding) nor red (the box's colour)."""
    xs = np.linspace(40, 200, width, dtype=np.float32)[None, :]
    ys = np.linspace(40, 200, height, dtype=np.float32)[:, None]
    photo = np.empty((height, width, 3), np.uint8)
    photo[:, :, 0] = 30
    photo[:, :, 1] = np.broadcast_to(xs, (height, width)).round()
    photo[:, :, 2] = np.broadcast_to(ys, (height, width)).round()
    return photo


def with_box(photo, box):
    photo = photo.copy()
    x0, y0, x1, y1 = box
    photo[y0:y1, x0:x1] = RED
    return photo


def extent(mask):
    """(x0, y0, x1, y1) pixel edges of the True pixels, and their centre."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return (x0, y0, x1, y1), ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2)


def red(crop):
    return (crop[:, :, 0] > 128) & (crop[:, :, 1] < 100) & (crop[:, :, 2] < 100)


def assert_aspect_and_centre(found, expected_size, out_size):
    """The content's measured size is the exact letterboxed size to a pixel; its centre is the crop's."""
    (x0, y0, x1, y1), (cx, cy) = found
    assert abs((x1 - x0) - expected_size[0]) <= 1.0 and abs((y1 - y0) - expected_size[1]) <= 1.0, (found, expected_size)
    assert abs(cx - (out_size[0] / 2 - 0.5)) <= 1.0 and abs(cy - (out_size[1] / 2 - 0.5)) <= 1.0, (found, out_size)


def assert_padding_is_no_edge_copy(crop, content):
    """No padding row or column equals the content's outermost row or column beside it."""
    x0, y0, x1, y1 = content
    for rows, edge in ((crop[:y0], crop[y0]), (crop[y1:], crop[y1 - 1])):
        for row in rows:
            assert not np.array_equal(row[x0:x1], edge[x0:x1])
    for columns, edge in ((crop[:, :x0], crop[:, x0]), (crop[:, x1:], crop[:, x1 - 1])):
        for k in range(columns.shape[1]):
            assert not np.array_equal(columns[y0:y1, k], edge[y0:y1])


def beyond_photo(matrix, out_size, photo_size):
    """Crop pixels whose centres lie beyond the photo's edges (a box crop's matrix: no rotation)."""
    xs = (np.arange(out_size[0]) - matrix[0, 2]) / matrix[0, 0]
    ys = (np.arange(out_size[1]) - matrix[1, 2]) / matrix[1, 1]
    return ((xs < -0.5) | (xs > photo_size[0] - 0.5))[None, :] | ((ys < -0.5) | (ys > photo_size[1] - 0.5))[:, None]


SHAPES = [(16, 16), (6000, 400), (400, 3000)]
SIZES = [(128, 64), (64, 64), (256, 128)]


@pytest.mark.parametrize("photo_size", SHAPES)
@pytest.mark.parametrize("out_size", SIZES)
@pytest.mark.parametrize("padding", ["constant", "context"])
def test_a_whole_photo_box_fills_the_crop_at_its_own_aspect_with_constant_bars(photo_size, out_size, padding):
    width, height = photo_size
    photo = gradient_photo(width, height)
    # The whole photo is the box (detect.method none): no margin, whatever align.margin says.
    geometry = box_crop((0, 0, width, height), 0.1, out_size, photo_size)
    crop = warp_box_crop(photo, geometry, out_size, padding)
    assert crop.shape == (out_size[1], out_size[0], 3)
    scale = min(out_size[0] / width, out_size[1] / height)
    shown = crop.any(axis=2)  # the photo has no 0 pixel; the padding is 0
    found = extent(shown)
    assert_aspect_and_centre(found, (width * scale, height * scale), out_size)
    x0, y0, x1, y1 = found[0]
    assert shown[y0:y1, x0:x1].all()  # one rectangle of photo ...
    assert (x1 - x0 == out_size[0]) or (y1 - y0 == out_size[1])  # ... as large as fits
    outside = np.ones(shown.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert (crop[outside] == 0).all()
    assert_padding_is_no_edge_copy(crop, found[0])


@pytest.mark.parametrize("photo_size", SHAPES)
@pytest.mark.parametrize("out_size", SIZES)
def test_reflect_padding_mirrors_the_content(photo_size, out_size):
    width, height = photo_size
    photo = gradient_photo(width, height)
    geometry = box_crop((0, 0, width, height), 0.0, out_size, photo_size)
    crop = warp_box_crop(photo, geometry, out_size, "reflect")
    left, top, w, h = geometry.content
    content = crop[top : top + h, left : left + w]
    # numpy's reflect mirrors about the edge pixel without repeating it (OpenCV's REFLECT_101).
    mirrored = np.pad(content, ((top, out_size[1] - h - top), (left, out_size[0] - w - left), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(crop, mirrored)
    # The content is the same photo as under constant padding; only within half a photo pixel of
    # its edge does an enlarged photo blend in its mirror rather than its edge pixel.
    constant = warp_box_crop(photo, geometry, out_size, "constant")[top : top + h, left : left + w]
    k = int(np.ceil(geometry.matrix[0, 0]))
    np.testing.assert_allclose(content[k : h - k, k : w - k], constant[k : h - k, k : w - k], atol=2)
    # The row (column) beside the content mirrors the second one, not the edge (unless 1 px thick).
    if top and h > 1:
        assert not np.array_equal(crop[top - 1], crop[top])
    if left and w > 1:
        assert not np.array_equal(crop[:, left - 1], crop[:, left])


BOX = (200, 150, 320, 190)  # 120 x 40: aspect 3


@pytest.mark.parametrize("out_size", [(128, 64), (64, 64), (64, 128), (256, 128)])
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3])
def test_a_box_inside_the_photo_keeps_its_aspect_centred(out_size, margin):
    photo = with_box(gradient_photo(600, 400), BOX)
    geometry = box_crop(BOX, margin, out_size, (600, 400))
    w, h = (BOX[2] - BOX[0]) * (1 + 2 * margin), (BOX[3] - BOX[1]) * (1 + 2 * margin)
    scale = min(out_size[0] / w, out_size[1] / h)
    expected = ((BOX[2] - BOX[0]) * scale, (BOX[3] - BOX[1]) * scale)
    crops = {padding: warp_box_crop(photo, geometry, out_size, padding) for padding in PADDINGS}
    left, top, cw, ch = geometry.content
    for padding, crop in crops.items():
        shown = red(crop)
        if padding == "reflect":  # the padding mirrors the box: measure it within the content
            shown[:top], shown[top + ch :], shown[:, :left], shown[:, left + cw :] = False, False, False, False
        assert_aspect_and_centre(extent(shown), expected, out_size)
    # context: the photo around the box fills the crop; 0 only beyond the photo's edges.
    beyond = beyond_photo(geometry.matrix, out_size, (600, 400))
    np.testing.assert_array_equal(crops["context"].any(axis=2), ~beyond)
    # constant: the box and its margin, then 0; the margin shows the photo, not padding.
    constant = crops["constant"]
    outside = np.ones(constant.shape[:2], bool)
    outside[top : top + ch, left : left + cw] = False
    assert (constant[outside] == 0).all() and constant[~outside].any(axis=1).all()
    if margin:
        assert (~red(constant[~outside].reshape(ch, cw, 3))).any()
    np.testing.assert_array_equal(constant[~outside], crops["context"][~outside])


def test_a_box_touching_the_photo_edge_is_padded_beyond_it_never_smeared():
    photo = gradient_photo(600, 400)
    photo[:, :, 1] = (np.arange(600) * 7 % 150 + 45)[None, :]  # columns 7 levels apart and more
    box, margin = (0, 100, 100, 150), 0.2
    # Window: 140 x 70 px, 20 px of it left of the photo; at 140x70 one crop pixel is one photo
    # pixel: crop column j shows photo column j - 20, crop row i photo row i + 90.
    assert box_window(box, margin, (600, 400)) == pytest.approx((-20.5, 89.5, 119.5, 159.5))
    geometry = box_crop(box, margin, (140, 70), (600, 400))
    assert geometry.content == (0, 0, 140, 70)
    inside = photo[90:160, 0:120]
    crops = {padding: warp_box_crop(photo, geometry, (140, 70), padding) for padding in PADDINGS}
    for padding, crop in crops.items():
        np.testing.assert_allclose(crop[:, 20:], inside, atol=1, err_msg=padding)
        beyond = crop[:, :20]
        for k in range(20):  # no column beyond the photo is a copy of its edge column
            assert not np.allclose(beyond[:, k], inside[:, 0], atol=1), (padding, k)
    assert (crops["context"][:, :20] == 0).all() and (crops["constant"][:, :20] == 0).all()
    # reflect mirrors the photo about its edge column (which is not repeated): column -k shows k.
    np.testing.assert_allclose(crops["reflect"][:, :20], photo[90:160, 20:0:-1], atol=1)


def test_a_degenerate_box_still_gives_a_centred_crop():
    photo = gradient_photo(50, 50)
    geometry = box_crop((10, 10, 10, 10), 0.1, (64, 32), (50, 50))
    crop = warp_box_crop(photo, geometry, (64, 32), "constant")
    assert crop.shape == (32, 64, 3)
    left, top, w, h = geometry.content
    assert (w, h) == (32, 32) and left == 16 and top == 0


def test_an_unknown_padding_is_refused():
    with pytest.raises(InputError, match="align.padding"):
        AlignSettings.from_params({"padding": "replicate"})
    geometry = box_crop((0, 0, 10, 10), 0.0, (8, 8))
    with pytest.raises(InputError, match="align.padding"):
        warp_box_crop(np.zeros((10, 10, 3), np.uint8), geometry, (8, 8), "smear")


@pytest.mark.parametrize("padding", PADDINGS)
def test_crop_images_letterboxes_box_crops_and_pads_masks_with_zero(tmp_path, padding):
    box = (150, 100, 350, 200)
    photo = with_box(gradient_photo(600, 400), box)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    whole = tmp_path / "b.png"  # a whole-photo box of a portrait photo
    cv2.imwrite(str(whole), cv2.cvtColor(gradient_photo(100, 300), cv2.COLOR_RGB2BGR))
    mask = np.zeros((400, 600), np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    mask_path = tmp_path / "a_mask.png"
    cv2.imwrite(str(mask_path), mask)
    images = pd.DataFrame(
        {
            "image": ["a.png", "b.png"],
            "split": ["train", "test"],
            "path": [str(path), str(whole)],
            "width": [600, 100],
            "height": [400, 300],
        }
    )
    boxes = pd.DataFrame(
        {
            "image": ["a.png", "b.png"],
            "split": ["train", "test"],
            "x0": [box[0], 0],
            "y0": [box[1], 0],
            "x1": [box[2], 100],
            "y1": [box[3], 300],
            "method": "t",
            "score": 1.0,
        }
    )
    keypoints = pd.DataFrame(
        {
            c: pd.Series(dtype="float64" if c in ("x", "y", "confidence") else "str")
            for c in ("image", "split", "keypoint", "x", "y", "confidence")
        }
    )
    masks = pd.DataFrame(
        {"image": ["a.png"], "split": ["train"], "mask_path": [str(mask_path)], "area": [1], "score": 1.0}
    )
    transforms = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params({}))
    assert transforms["method"].tolist() == ["box", "box"]
    table = crop_images(images, transforms, masks, "128x64", 0.1, tmp_path / "crops", padding=padding)
    table = table.set_index("image")
    crop = cv2.cvtColor(cv2.imread(table.loc["a.png", "crop_path"]), cv2.COLOR_BGR2RGB)
    assert table.loc["a.png", "crop_path"] == table.loc["a.png", "box_crop_path"]
    # 200 x 100 box + 10% margin: 240 x 120 px at 64/120 -> the box 106.7 x 53.3 px, centred.
    assert_aspect_and_centre(extent(red(crop)), (200 * 64 / 120, 100 * 64 / 120), (128, 64))
    mask_crop = cv2.imread(table.loc["a.png", "mask_crop_path"], cv2.IMREAD_GRAYSCALE)
    found = extent(mask_crop > 127)
    assert_aspect_and_centre(found, (200 * 64 / 120, 100 * 64 / 120), (128, 64))
    x0, y0, x1, y1 = found[0]
    outside = np.ones(mask_crop.shape, bool)
    outside[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = False  # the mask's edge pixels are blended
    assert (mask_crop[outside] == 0).all()  # never a mirrored mask
    portrait = cv2.imread(table.loc["b.png", "crop_path"])
    left, top, w, h = box_crop((0, 0, 100, 300), 0.1, (128, 64), (100, 300)).content
    assert (left, top, w, h) == (53, 0, 21, 64)  # no margin around the whole photo
    if padding != "reflect":
        assert (portrait[:, :left] == 0).all() and (portrait[:, left + w :] == 0).all()
    assert portrait[:, left : left + w].any(axis=2).all()
