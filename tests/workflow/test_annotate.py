"""The annotation page end to end: built from an ingested tiny demo, driven in headless Chromium
the way a person would (drag a box, click the keypoints in order, skip one, undo, next photo,
reload), its two CSV exports checked against where the test clicked, then fed to ingest as
data.annotations and to a short detector training."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers_annotated import NAMES, tiny_detector

from flukeline.annotate.page import run
from flukeline.data.ingest import ingest
from flukeline.detect.train import train_detector

# A detector that trains in seconds (tests/helpers_annotated.py), for one epoch on what was exported.
PARAMS = tiny_detector(encoder_weights=None, epochs=1, holdout_fraction=0.0)
TOLERANCE = 1.0  # original pixels between where the test clicked and what the CSV says


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo (with its ground-truth annotations, to know where the flukes are), ingested
    without annotations, and an annotation page of six of its train photos."""
    folder = tmp_path_factory.mktemp("annotate")
    root = folder / "kaggle"
    command = [
        sys.executable,
        "-m",
        "flukeline",
        "demo",
        "--out",
        str(root),
        "--truth",
        str(folder / "truth.csv"),
        "--preset",
        "tiny",
        "--seed",
        "0",
        "--workers",
        "1",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    data = folder / "data"
    ingest(root, data / "train.parquet", data / "test.parquet", data / "rejected.csv")
    page = folder / "annotate.html"
    info = run(
        train_path=data / "train.parquet", keypoints=",".join(NAMES), out=page, n=6, seed=0, display=640, threads=1
    )
    assert info["photos"] == 6
    return {"folder": folder, "root": root, "data": data, "page": page}


def _page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    blob = re.search(r'<script id="annotate-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob)


class Photo:
    """The photo on screen: where an original pixel position is in the viewport, and back."""

    def __init__(self, page, photo: dict):
        page.wait_for_function(
            "(name) => { const i = document.getElementById('photo'); return i.dataset.image === name"
            " && i.complete && i.naturalWidth > 0; }",
            arg=photo["image"],
            timeout=10_000,
        )
        self.rect = page.evaluate(
            "() => { const r = document.getElementById('photo').getBoundingClientRect();"
            " return {left: r.left, top: r.top, width: r.width, height: r.height}; }"
        )
        self.width, self.height = photo["width"], photo["height"]
        assert self.rect["width"] > 2 * self.width  # the small demo photo is shown enlarged

    def edge_to_screen(self, x: float, y: float) -> tuple[float, float]:
        """A box edge position (original pixels) -> viewport coordinates."""
        return (
            self.rect["left"] + x / self.width * self.rect["width"],
            self.rect["top"] + y / self.height * self.rect["height"],
        )

    def point_to_screen(self, x: float, y: float) -> tuple[float, float]:
        """A keypoint (original pixels, centres at integers) -> viewport coordinates."""
        return self.edge_to_screen(x + 0.5, y + 0.5)

    def expected_edge(self, sx: float, sy: float) -> tuple[float, float]:
        """Where a press at viewport (sx, sy) lands in original pixels as a box edge."""
        return (
            (sx - self.rect["left"]) / self.rect["width"] * self.width,
            (sy - self.rect["top"]) / self.rect["height"] * self.height,
        )

    def expected_point(self, sx: float, sy: float) -> tuple[float, float]:
        x, y = self.expected_edge(sx, sy)
        return x - 0.5, y - 0.5


def _inside(value: float, size: int) -> float:
    return min(max(value, 2.0), size - 3.0)


def _drag_box(page, photo: Photo, box) -> tuple[float, float, float, float]:
    """Drag from one corner of `box` (original pixels) to the other; the box the press should give."""
    (ax, ay), (bx, by) = photo.edge_to_screen(box[0], box[1]), photo.edge_to_screen(box[2], box[3])
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move((ax + bx) / 2, (ay + by) / 2, steps=3)
    page.mouse.move(bx, by, steps=3)
    page.mouse.up()
    (x0, y0), (x1, y1) = photo.expected_edge(round(ax), round(ay)), photo.expected_edge(round(bx), round(by))
    return x0, y0, x1, y1


def _click(page, photo: Photo, x: float, y: float) -> tuple[float, float]:
    sx, sy = photo.point_to_screen(_inside(x, photo.width), _inside(y, photo.height))
    page.mouse.click(sx, sy)
    return photo.expected_point(round(sx), round(sy))


def _export(page, button: str) -> list[dict]:
    with page.expect_download() as download:
        page.click(button)
    text = Path(download.value.path()).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def _near(a, b) -> bool:
    return all(abs(float(p) - float(q)) <= TOLERANCE for p, q in zip(a, b))


def test_annotate_page_in_headless_chromium_exports_what_ingest_and_the_detector_take(demo, chromium):
    data = _page_data(demo["page"])
    photos = data["photos"]
    train_images = set(pd.read_parquet(demo["data"] / "train.parquet")["image"])
    assert {p["image"] for p in photos} <= train_images and len({p["image"] for p in photos}) == 6
    # Six photos of six individuals (round-robin over identities; a new_whale photo is one of its own).
    assert len({p["id"] for p in photos if p["id"] != "new_whale"}) + sum(p["id"] == "new_whale" for p in photos) == 6
    truth_points = pd.read_csv(demo["root"] / "annotations/keypoints.csv").set_index(["Image", "keypoint"])
    truth_boxes = pd.read_csv(demo["root"] / "annotations/boxes.csv").groupby("Image").first()

    def truth(image, name):
        return truth_points.loc[(image, name), "x"], truth_points.loc[(image, name), "y"]

    context = chromium.new_context(accept_downloads=True, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo["page"].as_uri())
    assert page.inner_text("#progress") == "1 of 6"

    # Photo 1: the box, left_tip, notch marked not visible with the key, right_tip.
    first, second, third = photos[0], photos[1], photos[2]
    on_screen = Photo(page, first)
    expected_boxes, expected_points = {}, {}
    expected_boxes[first["image"]] = _drag_box(page, on_screen, truth_boxes.loc[first["image"]].tolist())
    expected_points[(first["image"], "left_tip")] = _click(page, on_screen, *truth(first["image"], "left_tip"))
    page.keyboard.press("s")
    expected_points[(first["image"], "right_tip")] = _click(page, on_screen, *truth(first["image"], "right_tip"))
    assert page.locator("#overlay rect.box").count() == 1 and page.locator("#overlay circle").count() == 2
    assert page.inner_text('#points li[data-keypoint="notch"] .where') == "not visible"
    assert page.inner_text("#prompt").startswith("Complete")

    # Photo 2 (the key n): a box, left_tip, a wrong notch undone with u, then notch and right_tip.
    page.keyboard.press("n")
    assert page.inner_text("#progress") == "2 of 6"
    on_screen = Photo(page, second)
    expected_boxes[second["image"]] = _drag_box(page, on_screen, truth_boxes.loc[second["image"]].tolist())
    expected_points[(second["image"], "left_tip")] = _click(page, on_screen, *truth(second["image"], "left_tip"))
    _click(page, on_screen, 3, 3)
    assert page.locator("#overlay circle").count() == 2
    page.keyboard.press("u")
    assert page.locator("#overlay circle").count() == 1
    for name in ("notch", "right_tip"):
        expected_points[(second["image"], name)] = _click(page, on_screen, *truth(second["image"], name))
    assert page.locator("#overlay circle").count() == 3 and page.locator("#overlay rect.box").count() == 1
    screenshot = demo["folder"] / "annotate.png"
    page.screenshot(path=str(screenshot))
    if os.environ.get("FLUKELINE_ANNOTATE_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["FLUKELINE_ANNOTATE_SCREENSHOT"])

    # Photo 3 (the key →): a box undone with u, a point cleared with c, then left alone.
    page.keyboard.press("ArrowRight")
    on_screen = Photo(page, third)
    _drag_box(page, on_screen, truth_boxes.loc[third["image"]].tolist())
    assert page.locator("#overlay rect.box").count() == 1
    page.keyboard.press("u")
    assert page.locator("#overlay rect.box").count() == 0
    _click(page, on_screen, *truth(third["image"], "left_tip"))
    page.keyboard.press("c")
    assert page.locator("#overlay circle").count() == 0 and page.inner_text("#box-text") == "no box yet"
    page.keyboard.press("p")
    assert page.inner_text("#progress") == "2 of 6"
    page.keyboard.press("ArrowRight")

    # The work survives a reload (localStorage, keyed per page), on the photo it was left at.
    page.reload()
    assert page.inner_text("#progress") == "3 of 6"
    page.keyboard.press("ArrowLeft")
    Photo(page, second)
    assert page.locator("#overlay circle").count() == 3 and page.locator("#overlay rect.box").count() == 1

    boxes = _export(page, "#export-boxes")
    keypoints = _export(page, "#export-keypoints")
    assert errors == []
    context.close()

    # The CSVs: original pixels within a pixel of the presses, the skipped keypoint with visible 0.
    assert [row["Image"] for row in boxes] == [first["image"], second["image"]]
    for row in boxes:
        box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        assert _near(box, expected_boxes[row["Image"]]), (box, expected_boxes[row["Image"]])
    assert [(row["Image"], row["keypoint"], row["visible"]) for row in keypoints] == [
        (first["image"], "left_tip", "1"),
        (first["image"], "notch", "0"),
        (first["image"], "right_tip", "1"),
        (second["image"], "left_tip", "1"),
        (second["image"], "notch", "1"),
        (second["image"], "right_tip", "1"),
    ]
    for row in keypoints:
        if row["visible"] == "0":
            assert row["x"] == row["y"] == ""
        else:
            point = (float(row["x"]), float(row["y"]))
            assert _near(point, expected_points[(row["Image"], row["keypoint"])]), (row, expected_points)
            # And where the fluke is: the demo's own annotation (clipped into the photo).
            photo = next(p for p in photos if p["image"] == row["Image"])
            x, y = truth(row["Image"], row["keypoint"])
            assert _near(point, (_inside(x, photo["width"]), _inside(y, photo["height"])))

    # ingest takes them as data.annotations ...
    exported = demo["folder"] / "exported"
    exported.mkdir()
    for name, rows in (("boxes.csv", boxes), ("keypoints.csv", keypoints)):
        pd.DataFrame(rows).to_csv(exported / name, index=False)
    data_dir = demo["folder"] / "annotated"
    summary = ingest(
        demo["root"],
        data_dir / "train.parquet",
        data_dir / "test.parquet",
        data_dir / "rejected.csv",
        annotations={"keypoints": exported / "keypoints.csv", "boxes": exported / "boxes.csv"},
    )
    assert summary["n_keypoints"] == 6 and summary["n_boxes"] == 2
    table = pd.read_parquet(data_dir / "keypoints.parquet")
    assert table["visible"].tolist() == [True, False, True, True, True, True]
    assert pd.read_parquet(data_dir / "boxes.parquet")["image"].tolist() == [first["image"], second["image"]]

    # ... and the detector trains on them (keypoints without masks: the mask channel weighs 0).
    train = pd.read_parquet(data_dir / "train.parquet")
    assert train["mask_path"].isna().all()
    model = demo["folder"] / "detector.safetensors"
    meta = train_detector(train, table, PARAMS, 0, model, demo["folder"] / "history.csv")
    assert meta["n_train"] == 2 and model.is_file()
    history = pd.read_csv(demo["folder"] / "history.csv")
    assert history["epoch"].tolist() == [1] and history.filter(like="loss").notna().all().all()


def test_the_detector_trains_on_ingests_tables_of_keypoints_without_masks(demo):
    """Keypoints and no masks folder: ingest's mask_path is pd.NA, which the detector reads as no mask."""
    data_dir = demo["folder"] / "keypoints_only"
    ingest(
        demo["root"],
        data_dir / "train.parquet",
        data_dir / "test.parquet",
        data_dir / "rejected.csv",
        annotations={"keypoints": demo["root"] / "annotations/keypoints.csv"},
    )
    train, keypoints = pd.read_parquet(data_dir / "train.parquet"), pd.read_parquet(data_dir / "keypoints.parquet")
    train_detector(
        train,
        keypoints,
        dict(PARAMS, max_train_images=4),
        0,
        data_dir / "detector.safetensors",
        data_dir / "history.csv",
    )
