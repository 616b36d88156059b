"""The match-review page's data assembly on synthetic tables, its rendering, and the review rule's
run on synthetic inputs (tables: tests/helpers_review.py). The page the tiny run builds and the page
in headless Chromium are in tests/workflow/test_review.py."""

import json
import re

import pytest
from helpers_review import _page_data, _synthetic_run, _tables, _vote_topk

from flukeline.core.errors import InputError
from flukeline.review.page import assemble_review, render_page, representative_images, run


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


def test_assemble_review_of_votes_shows_new_whales_share_and_ignores_the_similarity_threshold():
    train, test, predictions, _ = _tables()
    data = assemble_review(
        test, train, predictions, _vote_topk(), threshold=0.6, near_threshold=0.05, min_margin=0.1, score="votes"
    )
    assert data["score"] == "votes"
    q2, q1 = data["queries"]
    assert [c["similarity"] for c in q1["candidates"]] == [0.9, 0.5, 0.2]  # new_whale has its votes too
    assert q1["candidates"][1]["new"] is True and q1["candidates"][1]["reference"] is None
    assert q2["top_similarity"] == 0.6 and q2["margin"] == pytest.approx(0.05)
    # q2's top share 0.6 equals the (similarity) threshold: no close call for that; its margin 0.05 is one.
    assert q2["low_confidence"] is True and q1["low_confidence"] is False
    with pytest.raises(InputError, match=r"score 'odds'"):
        assemble_review(test, train, predictions, _vote_topk(), threshold=0.6, score="odds")


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
