"""The annotation page's Python side: photos chosen round-robin over identities (seeded), each
photo's original size kept beside its embedded JPEG, the keypoint names checked, and the data
embedded so that no value can close the script element."""

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flukeline.annotate.page import parse_keypoints, render_page, run, select_photos
from flukeline.core.errors import InputError


def _train(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{identity}_{i}.jpg", identity) for identity, count in counts.items() for i in range(count)]
    images, ids = [r[0] for r in rows], [r[1] for r in rows]
    return pd.DataFrame({"image": images, "path": [f"/d/{image}" for image in images], "id": ids})


def _page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    blob = re.search(r'<script id="annotate-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob)


def test_selection_goes_round_robin_over_identities():
    train = _train({"w_a": 10, "w_b": 3, "w_c": 1, "new_whale": 4})
    chosen = select_photos(train, 7, seed=0)
    # Round one: one photo of each of w_a, w_b, w_c and of every new_whale photo (each an individual).
    assert len(chosen) == 7 and chosen["image"].is_unique
    first = chosen.iloc[:7]
    assert set(first.loc[first["id"] != "new_whale", "id"]) == {"w_a", "w_b", "w_c"}
    assert (first["id"] == "new_whale").sum() == 4
    # Then w_a and w_b again, then w_a alone until the photos run out.
    everything = select_photos(train, 100, seed=0)
    assert len(everything) == len(train) and set(everything["image"]) == set(train["image"])
    assert everything["id"].iloc[7:9].tolist().count("w_a") == 1 and set(everything["id"].iloc[7:9]) == {"w_a", "w_b"}
    assert set(everything["id"].iloc[11:]) == {"w_a"}


def test_selection_is_seeded_and_independent_of_row_order():
    train = _train({f"w_{i}": 1 + i % 4 for i in range(30)})
    once = select_photos(train, 12, seed=3)["image"].tolist()
    shuffled = train.sample(frac=1.0, random_state=1)
    assert select_photos(shuffled, 12, seed=3)["image"].tolist() == once
    assert select_photos(train, 12, seed=4)["image"].tolist() != once
    assert len(set(select_photos(train, 12, seed=3)["id"])) == 12  # 12 photos, 12 individuals
    with pytest.raises(InputError, match="n must be >= 1"):
        select_photos(train, 0, seed=0)


def test_keypoint_names_are_checked():
    assert parse_keypoints("left_tip, notch,right_tip") == ["left_tip", "notch", "right_tip"]
    assert parse_keypoints(["a", "b"]) == ["a", "b"]
    with pytest.raises(InputError, match="more than once"):
        parse_keypoints("notch,notch")
    with pytest.raises(InputError, match="comma-separated"):
        parse_keypoints("notch,,tip")
    with pytest.raises(InputError, match="not plain names"):
        parse_keypoints(["a b"])


def test_render_page_escapes_script_end_tags_in_the_data():
    page = render_page({"photos": [{"image": "</script><b>x.jpg"}], "keypoints": ["a"], "page": "p"})
    assert "</script><b>" not in page
    blob = re.search(r'<script id="annotate-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["photos"][0]["image"] == "</script><b>x.jpg"


def test_run_embeds_each_photo_with_its_original_size(tmp_path):
    sizes = {"w_a_0.jpg": (900, 300), "w_a_1.jpg": (200, 100), "w_b_0.png": (120, 480), "w_c_0.jpg": (50, 40)}
    root = tmp_path / "kaggle"
    (root / "train").mkdir(parents=True)
    for name, size in sizes.items():
        Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(root / "train" / name)
    ids = {"w_a_0.jpg": "w_a", "w_a_1.jpg": "w_a", "w_b_0.png": "w_b", "w_c_0.jpg": "w_c", "gone.jpg": "w_d"}
    pd.DataFrame({"Image": list(ids), "Id": list(ids.values())}).to_csv(root / "train.csv", index=False)
    out = tmp_path / "annotate.html"
    info = run(root=root, keypoints="left_tip,notch,right_tip", out=out, n=10, seed=0, display=160, threads=1)
    assert info["photos"] == 4  # gone.jpg has no photo: left out
    data = _page_data(out)
    assert data["keypoints"] == ["left_tip", "notch", "right_tip"] and data["display"] == 160
    assert "u * width - 0.5" in data["coordinates"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", out.read_text(encoding="utf-8"))
    for photo in data["photos"]:
        width, height = sizes[photo["image"]]
        assert (photo["width"], photo["height"]) == (width, height)
        assert photo["src"].startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(photo["src"].split(",", 1)[1]))) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (photo["thumb_width"], photo["thumb_height"])
            # Shrunk to 160 px on the longer side, never enlarged, the aspect ratio kept.
            assert max(thumb.size) == min(160, max(width, height))
            assert thumb.size[0] / thumb.size[1] == pytest.approx(width / height, rel=0.02)
    # The same photos and keypoints give the same page key (its saved work); other keypoints another.
    again = tmp_path / "again.html"
    run(root=root, keypoints="left_tip,notch,right_tip", out=again, n=10, seed=0, display=160, threads=1)
    assert _page_data(again)["page"] == data["page"]
    run(root=root, keypoints="left_tip,right_tip", out=again, n=10, seed=0, display=160, threads=1)
    assert _page_data(again)["page"] != data["page"]


def test_run_needs_exactly_one_source(tmp_path):
    with pytest.raises(InputError, match="either --train"):
        run(keypoints="a", out=tmp_path / "x.html")
    with pytest.raises(InputError, match="either --train"):
        run(train_path=tmp_path / "t.parquet", root=tmp_path, keypoints="a", out=tmp_path / "x.html")
