"""The match-review page: its data assembly (synthetic tables), the page the tiny run builds, and
the page driven end to end in headless Chromium (clicks, keys, CSV export)."""

import base64
import csv
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from flukeline.core.errors import InputError
from flukeline.review.page import assemble_review, render_page, representative_images, run

CHROMIUM = Path("/usr/bin/chromium")


def _tables():
    train = pd.DataFrame({
        "image": ["t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg"],
        "path": ["/d/t1.jpg", "/d/t2.jpg", "/d/t3.jpg", "/d/t4.jpg"],
        "id": ["w_a", "w_a", "w_b", "new_whale"],
        "width": [100, 300, 50, 900],
        "height": [50, 100, 50, 900],
    })
    test = pd.DataFrame({"image": ["q2.jpg", "q1.jpg"], "path": ["/d/q2.jpg", "/d/q1.jpg"]})
    predictions = pd.DataFrame({
        "image": ["q1.jpg", "q2.jpg"],
        "predicted": ["w_a new_whale w_b", "new_whale w_b w_a"],
    })
    topk = pd.DataFrame({
        "image": ["q1.jpg", "q1.jpg", "q2.jpg", "q2.jpg"],
        "rank": [0, 1, 1, 0],
        "id": ["w_a", "w_b", "w_a", "w_b"],
        "similarity": [0.97, 0.50, 0.70, 0.88],
    })
    return train, test, predictions, topk


def test_assemble_review_follows_the_test_table_and_the_predicted_lists():
    train, test, predictions, topk = _tables()
    data = assemble_review(test, train, predictions, topk, threshold=0.9, near_threshold=0.05, min_margin=0.1)
    assert data["threshold"] == 0.9
    assert [q["image"] for q in data["queries"]] == ["q2.jpg", "q1.jpg"]  # test-table order
    q2, q1 = data["queries"]
    # Candidates in the submission's order; similarities of identities from the top-k table.
    assert [c["id"] for c in q1["candidates"]] == ["w_a", "new_whale", "w_b"]
    assert [c["similarity"] for c in q1["candidates"]] == [0.97, None, 0.5]
    assert [c["new"] for c in q1["candidates"]] == [False, True, False]
    assert q1["top_similarity"] == 0.97 and q1["margin"] == pytest.approx(0.47)
    assert q1["predicted_new"] is False and q2["predicted_new"] is True
    # Ranks, not row order, decide the best identity: q2's best is w_b (rank 0).
    assert q2["top_similarity"] == 0.88 and q2["margin"] == pytest.approx(0.18)
    # q2: top 0.88 is within 0.05 of the threshold 0.9; q1: 0.97 is not, and its margin 0.47 is wide.
    assert q2["low_confidence"] is True and q1["low_confidence"] is False
    # A narrow margin alone makes a close call too.
    narrow = assemble_review(test, train, predictions, topk, threshold=0.9, near_threshold=0.01, min_margin=0.5)
    assert [q["low_confidence"] for q in narrow["queries"]] == [True, True]
    wide = assemble_review(test, train, predictions, topk, threshold=0.9, near_threshold=0.01, min_margin=0.1)
    assert [q["low_confidence"] for q in wide["queries"]] == [False, False]
    # Reference photos: the largest train image of the identity, never a new_whale image.
    assert q1["candidates"][0]["reference"] == "t2.jpg" and q1["candidates"][2]["reference"] == "t3.jpg"
    assert q1["candidates"][1]["reference"] is None


def test_representative_images_pick_the_largest_photo_and_skip_new_whale():
    train, *_ = _tables()
    assert representative_images(train) == {"w_a": "t2.jpg", "w_b": "t3.jpg"}


def test_assemble_review_names_test_images_without_predictions():
    train, test, predictions, topk = _tables()
    with pytest.raises(InputError, match=r"no predicted list for 1 test image.*q2\.jpg"):
        assemble_review(test, train, predictions[predictions["image"] == "q1.jpg"], topk, threshold=0.9)


def test_render_page_escapes_script_end_tags_in_the_data():
    page = render_page({"queries": [{"image": "</script><b>x"}], "images": {}, "run": "r"})
    assert "</script><b>" not in page
    blob = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert json.loads(blob)["queries"][0]["image"] == "</script><b>x"


def _vote_topk():
    """A vote ensemble's test top-k table: vote shares, new_whale voted for like any identity."""
    return pd.DataFrame({
        "image": ["q1.jpg", "q1.jpg", "q1.jpg", "q2.jpg", "q2.jpg", "q2.jpg"],
        "rank": [0, 1, 2, 0, 1, 2],
        "id": ["w_a", "new_whale", "w_b", "new_whale", "w_b", "w_a"],
        "similarity": [0.9, 0.5, 0.2, 0.6, 0.55, 0.3],
    })


def test_assemble_review_of_votes_shows_new_whales_share_and_ignores_the_similarity_threshold():
    train, test, predictions, _ = _tables()
    data = assemble_review(test, train, predictions, _vote_topk(), threshold=0.6, near_threshold=0.05, min_margin=0.1,
                           score="votes")
    assert data["score"] == "votes"
    q2, q1 = data["queries"]
    assert [c["similarity"] for c in q1["candidates"]] == [0.9, 0.5, 0.2]  # new_whale has its votes too
    assert q1["candidates"][1]["new"] is True and q1["candidates"][1]["reference"] is None
    assert q2["top_similarity"] == 0.6 and q2["margin"] == pytest.approx(0.05)
    # q2's top share 0.6 equals the (similarity) threshold: no close call for that; its margin 0.05 is one.
    assert q2["low_confidence"] is True and q1["low_confidence"] is False
    with pytest.raises(InputError, match=r"score 'odds'"):
        assemble_review(test, train, predictions, _vote_topk(), threshold=0.6, score="odds")


def _synthetic_run(folder: Path, topk: pd.DataFrame, summary: dict) -> dict:
    """The review rule's inputs from _tables(), with a small photo per image (photo = its crop)."""
    train, test, predictions, _ = _tables()
    paths = {}
    for image in [*train["image"], *test["image"]]:
        paths[image] = folder / image
        Image.new("RGB", (40, 30), (len(paths) * 30, 90, 160)).save(paths[image])
    train["path"], test["path"] = train["image"].map(paths).astype(str), test["image"].map(paths).astype(str)
    splits = ["train"] * len(train) + ["test"] * len(test)
    align = pd.DataFrame({"image": [*train["image"], *test["image"]], "split": splits})
    align["crop_path"] = align["image"].map(paths).astype(str)
    inputs = {"train": train, "test": test, "predictions": predictions, "align": align, "topk": topk}
    for name, table in inputs.items():
        table.to_parquet(folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps(summary))
    return {"train_path": folder / "train.parquet", "test_path": folder / "test.parquet",
            "align_path": folder / "align.parquet", "predictions_path": folder / "predictions.parquet",
            "summary_path": folder / "summary.json", "topk_path": folder / "topk.parquet", "out": folder / "index.html"}


def test_run_reads_the_ensembles_own_table_and_its_kind_of_score(tmp_path):
    paths = _synthetic_run(tmp_path, _vote_topk(), {"threshold": 0.6, "score": "votes", "method": "vote"})
    info = run(**paths)
    assert info["score"] == "votes" and info["queries"] == 2
    data = _page_data(paths["out"])
    assert data["score"] == "votes"
    assert [c["similarity"] for c in data["queries"][1]["candidates"]] == [0.9, 0.5, 0.2]


def test_run_names_a_summary_without_the_score_kind(tmp_path):
    paths = _synthetic_run(tmp_path, _tables()[3], {"threshold": 0.9, "members": {"lcnet4@round0": 1.0}})
    with pytest.raises(InputError, match=r"summary\.json: no 'score' key"):
        run(**paths)


def _page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    blob = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob)


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
    wanted |= {f"train/{c['reference']}/{kind}" for q in data["queries"] for c in q["candidates"] if c["reference"] for kind in ("photo", "crop")}
    assert set(data["images"]) == wanted
    for uri in data["images"].values():
        assert uri.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 160


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: tools/setup.sh installs Debian's chromium only when run as root with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


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
    images = [q["image"] for q in data["queries"]]
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
        " return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }", timeout=10_000)

    # Keyboard navigation: j / ArrowDown forward, k back.
    page.keyboard.press("j")
    assert _selected(page) == images[1]
    page.keyboard.press("ArrowDown")
    assert _selected(page) == images[2]
    page.keyboard.press("k")
    assert _selected(page) == images[1]
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.query.selected img')].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000)

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
    assert page.get_attribute(f'li.query[data-image="{match_query["image"]}"] .card[data-k="2"] button', "aria-pressed") == "true"

    expected = {
        match_query["image"]: ["match", match_query["candidates"][1]["id"]],
        new_image: ["new", "new_whale"],
        unsure_image: ["unsure", ""],
    }
    rows = _export(page)
    assert rows[0] == ["Image", "decision", "Id"]
    assert {row[0]: row[1:] for row in rows[1:]} == expected and len(rows) == 1 + len(expected)
    assert [row[0] for row in rows[1:]] == [image for image in images if image in expected]  # page order

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
