"""The match-review page the tiny run builds, and the page driven end to end in headless Chromium
(clicks, keys, CSV export, the keypoint-matches panel). Its data assembly on synthetic tables is in
tests/unit/test_review_data.py; the synthetic tables themselves are in tests/helpers_review.py."""

import base64
import csv
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers_review import (
    Q1_WA_GALLERY_XY,
    Q1_WA_QUERY_XY,
    _correspondences,
    _page_data,
    _synthetic_run,
    _tables,
    _vote_topk,
)
from PIL import Image

from flukeline.review.page import run


def _round(path: Path) -> int:
    return int(path.parent.parent.name.removeprefix("round"))


def test_tiny_run_page_has_every_test_image_with_its_submission_candidates(tiny_run):
    workdir, _ = tiny_run
    page = workdir / "results/review/index.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must not load anything from the network"
    data = _page_data(page)
    submission = pd.read_csv(workdir / "results/submission.csv", dtype=str, keep_default_na=False)
    assert [q["image"] for q in data["queries"]] == submission["Image"].tolist()
    for query, ids in zip(data["queries"], submission["Id"]):
        assert [c["id"] for c in query["candidates"]] == ids.split()
        assert query["predicted_new"] == (ids.split()[0] == "new_whale")
    # The scores are the final ensemble's own table's, whose best similarity its lists were cut at.
    final = sorted((workdir / "results/match").glob("round*/ensemble/test_predictions.parquet"), key=_round)[-1]
    summary = json.loads((final.parent / "summary.json").read_text())
    assert data["threshold"] == summary["threshold"] and data["score"] == summary["score"]
    score = pd.read_parquet(final.parent / "test_topk.parquet").set_index(["image", "id"])["similarity"]
    for query in data["queries"]:
        for candidate in query["candidates"]:
            if candidate["similarity"] is not None:
                expected = float(score[(query["image"], candidate["id"])])
                assert candidate["similarity"] == pytest.approx(expected, abs=1e-4)
    if summary["score"] == "similarity":
        best = pd.read_parquet(final).set_index("image")["best_similarity"]
        for query in data["queries"]:
            assert query["top_similarity"] == pytest.approx(float(best[query["image"]]), abs=1e-4)
    # Every picture the page refers to is embedded, as a JPEG of at most 160 px.
    wanted = {f"test/{q['image']}/{kind}" for q in data["queries"] for kind in ("photo", "crop")}
    wanted |= {
        f"train/{c['reference']}/{kind}"
        for q in data["queries"]
        for c in q["candidates"]
        if c["reference"]
        for kind in ("photo", "crop")
    }
    # With the local member on, the gallery images its keypoint matches were found on: their crops.
    wanted |= {
        f"train/{c['matches']['gallery']}/crop" for q in data["queries"] for c in q["candidates"] if "matches" in c
    }
    assert set(data["images"]) == wanted
    # Each query carries its decision class and probabilities from results/decisions.csv.
    decided = pd.read_csv(workdir / "results/decisions.csv", keep_default_na=False).set_index("Image")
    assert data["decisions"] is True
    for query in data["queries"]:
        row = decided.loc[query["image"]]
        assert query["decision"] == row["decision"] in ("match", "new", "review")
        assert query["p_correct"] == pytest.approx(row["p_correct"], abs=1e-4)
        assert query["p_new"] == pytest.approx(row["p_new"], abs=1e-4)
    for uri in data["images"].values():
        assert uri.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 160


def _selected(page) -> str:
    return page.get_attribute("li.query.selected", "data-image")


def _export(page) -> list[list[str]]:
    with page.expect_download() as download:
        page.click("#export")
    return list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))


def test_review_page_in_headless_chromium(tiny_run, chromium):
    workdir, _ = tiny_run
    page_path = workdir / "results/review/index.html"
    data = _page_data(page_path)
    # The page opens sorted "to review first": review photos, then the automatic ones, each in
    # submission order (the export keeps submission order).
    rank = {"review": 0, "match": 1, "new": 2}
    submission_order = [q["image"] for q in data["queries"]]
    images = [q["image"] for q in sorted(data["queries"], key=lambda q: rank[q["decision"]])]
    assert len(images) >= 4
    context = chromium.new_context(accept_downloads=True, viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri())

    assert page.locator("li.query").count() == len(images)
    assert page.inner_text("#status").startswith(f"showing {len(images)} of {len(images)} queries")
    # The first query is selected; its pictures (test photo, crop, candidates' references) load.
    assert _selected(page) == images[0]
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('li.query.selected img')];"
        " return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=10_000,
    )

    # Keyboard navigation: j / ArrowDown forward, k back.
    page.keyboard.press("j")
    assert _selected(page) == images[1]
    page.keyboard.press("ArrowDown")
    assert _selected(page) == images[2]
    page.keyboard.press("k")
    assert _selected(page) == images[1]
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.query.selected img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )

    # Clicks: "match 2" on a query whose 2nd candidate is an identity, "new" on another, "unsure" on a third.
    match_query = next(q for q in data["queries"] if len(q["candidates"]) > 1 and not q["candidates"][1]["new"])
    others = [image for image in images if image != match_query["image"]]
    new_image, unsure_image, key_image = others[0], others[1], others[2]
    page.click(f'li.query[data-image="{match_query["image"]}"] .card[data-k="2"] button')
    page.click(f'li.query[data-image="{new_image}"] button.new')
    page.click(f'li.query[data-image="{unsure_image}"] button.unsure')
    # A key decision: "5" on the selected query (clicking selects it), then "0" clears it.
    page.click(f'li.query[data-image="{key_image}"] h2')
    assert _selected(page) == key_image
    page.keyboard.press("5")
    assert page.get_attribute(f'li.query[data-image="{key_image}"]', "data-decision") != ""
    page.keyboard.press("0")
    assert page.get_attribute(f'li.query[data-image="{key_image}"]', "data-decision") == ""
    assert (
        page.get_attribute(f'li.query[data-image="{match_query["image"]}"] .card[data-k="2"] button', "aria-pressed")
        == "true"
    )

    expected = {
        match_query["image"]: ["match", match_query["candidates"][1]["id"]],
        new_image: ["new", "new_whale"],
        unsure_image: ["unsure", ""],
    }
    rows = _export(page)
    assert rows[0] == ["Image", "decision", "Id"]
    assert {row[0]: row[1:] for row in rows[1:]} == expected and len(rows) == 1 + len(expected)
    assert [row[0] for row in rows[1:]] == [image for image in submission_order if image in expected]

    # Filter "undecided" hides the three decided queries; sorting by margin puts the smallest first.
    page.select_option("#filter", "undecided")
    assert page.locator("li.query:not([hidden])").count() == len(images) - 3
    page.select_option("#filter", "all")
    page.select_option("#sort", "margin-asc")
    smallest = min((q for q in data["queries"] if q["margin"] is not None), key=lambda q: q["margin"])
    assert page.get_attribute("li.query:not([hidden])", "data-image") == smallest["image"]

    # Decisions survive a reload (localStorage, keyed by run).
    page.reload()
    assert {row[0]: row[1:] for row in _export(page)[1:]} == expected
    assert errors == []
    context.close()


def test_vote_page_labels_its_scores_as_vote_shares(tmp_path, chromium):
    paths = _synthetic_run(tmp_path, _vote_topk(), {"threshold": 0.6, "score": "votes", "method": "vote"})
    run(**paths)
    context = chromium.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(paths["out"].as_uri())
    q1 = 'li.query[data-image="q1.jpg"]'
    assert "top vote share 0.900" in page.inner_text(f"{q1} .query-head")
    assert page.inner_text(f'{q1} .card[data-k="1"] p') == "vote share 0.900"
    assert "voted here by the members (vote share 0.500)" in page.inner_text(f'{q1} .card[data-k="2"] p')
    assert page.inner_text('#sort option[value="top-asc"]') == "top vote share, lowest first"
    assert "each member placed it by its own threshold" in page.text_content("#threshold-help")
    assert errors == []
    context.close()


# The panel's geometry as displayed: the two crops' boxes, the SVG's and its lines' endpoints (page px).
PANEL_GEOMETRY = """() => {
  const box = (selector) => { const r = document.querySelector(selector).getBoundingClientRect();
    return { left: r.left, top: r.top, width: r.width, height: r.height }; };
  const svg = box("#match-lines");
  const lines = [...document.querySelectorAll("#match-lines line")].map((l) =>
    ["x1", "y1", "x2", "y2"].map((a) => Number(l.getAttribute(a)) + (a[0] === "x" ? svg.left : svg.top)));
  return { query: box("#match-query"), gallery: box("#match-gallery"), lines };
}"""


def _panel(page, image: str, k: int) -> dict:
    """The open panel of `image`'s candidate k once drawn (both crops decoded, lines placed)."""
    page.wait_for_selector(f'#matches-overlay[data-image="{image}"][data-k="{k}"][data-ready="true"]', timeout=5_000)
    loaded = "img => img.complete && img.naturalWidth > 0"
    assert page.eval_on_selector("#match-query", loaded) and page.eval_on_selector("#match-gallery", loaded)
    return page.evaluate(PANEL_GEOMETRY)


def _inside(x: float, y: float, box: dict, slack: float = 0.5) -> bool:
    return (
        box["left"] - slack <= x <= box["left"] + box["width"] + slack
        and box["top"] - slack <= y <= box["top"] + box["height"] + slack
    )


def test_keypoint_matches_panel_draws_one_line_per_correspondence(tmp_path, chromium):
    paths = _synthetic_run(tmp_path, _tables()[3], {"threshold": 0.9, "score": "similarity"}, _correspondences())
    run(**paths)
    data = _page_data(paths["out"])
    context = chromium.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(paths["out"].as_uri())
    q1, q2 = 'li.query[data-image="q1.jpg"]', 'li.query[data-image="q2.jpg"]'
    # Controls only on candidates with a row: q1's w_a (23 inliers) and w_b (0), q2's w_b; not on
    # new_whale, nor on q2's w_a (no row).
    assert page.locator("button.matches").count() == 3
    assert page.inner_text(f'{q1} .card[data-k="1"] button.matches') == "matches (23)"
    assert page.inner_text(f'{q1} .card[data-k="3"] button.matches') == "matches (0)"
    assert page.locator(f'{q1} .card[data-k="2"] button.matches').count() == 0
    assert page.locator(f'{q2} .card[data-k="3"] button.matches').count() == 0
    assert page.is_hidden("#matches-overlay")
    assert "m the keypoint matches (sift)" in page.text_content("#matches-help")

    # A click: the query's crop and the matched gallery image's (t1.jpg, not w_a's reference t2.jpg).
    page.click(f'{q1} .card[data-k="1"] button.matches')
    geometry = _panel(page, "q1.jpg", 1)
    assert page.get_attribute("#match-query", "src") == data["images"]["test/q1.jpg/crop"]
    assert page.get_attribute("#match-gallery", "src") == data["images"]["train/t1.jpg/crop"]
    assert page.inner_text("#matches-caption") == "23 inliers (sift) · P(same) 0.930 · gallery image t1.jpg · 7 drawn"
    query, gallery = geometry["query"], geometry["gallery"]
    assert query["width"] > 100 and gallery["width"] > 100 and gallery["left"] > query["left"] + query["width"]
    assert len(geometry["lines"]) == len(Q1_WA_QUERY_XY) // 2
    for i, (x1, y1, x2, y2) in enumerate(geometry["lines"]):
        assert _inside(x1, y1, query) and _inside(x2, y2, gallery)
        # The normalised coordinates scaled to the displayed boxes.
        assert x1 == pytest.approx(query["left"] + Q1_WA_QUERY_XY[2 * i] * query["width"], abs=0.6)
        assert y1 == pytest.approx(query["top"] + Q1_WA_QUERY_XY[2 * i + 1] * query["height"], abs=0.6)
        assert x2 == pytest.approx(gallery["left"] + Q1_WA_GALLERY_XY[2 * i] * gallery["width"], abs=0.6)
        assert y2 == pytest.approx(gallery["top"] + Q1_WA_GALLERY_XY[2 * i + 1] * gallery["height"], abs=0.6)
    # The panel is modal: review keys wait; Escape closes it and review goes on as before.
    page.keyboard.press("1")
    assert page.get_attribute(q1, "data-decision") == ""
    page.keyboard.press("Escape")
    assert page.is_hidden("#matches-overlay")
    assert _selected(page) == "q1.jpg"
    page.keyboard.press("1")
    assert page.get_attribute(q1, "data-decision") == "match"
    page.keyboard.press("0")

    # The key: m opens the selected query's first candidate with matches, m again the next one.
    page.click(f"{q2} h2")
    page.keyboard.press("m")
    geometry = _panel(page, "q2.jpg", 2)
    assert len(geometry["lines"]) == 2
    assert page.inner_text("#matches-caption") == "2 inliers (sift) · P(same) 0.400 · gallery image t3.jpg"
    page.keyboard.press("Escape")
    assert page.is_hidden("#matches-overlay")
    page.keyboard.press("j")
    assert _selected(page) == "q1.jpg"
    page.keyboard.press("m")
    assert len(_panel(page, "q1.jpg", 1)["lines"]) == 7
    page.keyboard.press("m")
    assert len(_panel(page, "q1.jpg", 3)["lines"]) == 0
    assert page.inner_text("#matches-caption").startswith("0 inliers (sift) · P(same) 0.020 · gallery image t3.jpg")
    # The close button closes it too.
    page.click("#matches-close")
    assert page.is_hidden("#matches-overlay")
    assert errors == []
    context.close()


def test_page_without_correspondences_has_no_matches_controls(tmp_path, chromium):
    paths = _synthetic_run(tmp_path, _tables()[3], {"threshold": 0.9, "score": "similarity"})
    run(**paths)
    context = chromium.new_context()
    page = context.new_page()
    page.goto(paths["out"].as_uri())
    assert page.locator("li.query").count() == 2 and page.locator("button.matches").count() == 0
    assert page.text_content("#matches-help") == ""
    page.keyboard.press("m")
    assert page.is_hidden("#matches-overlay")
    context.close()
