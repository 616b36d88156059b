"""The match-review page's data assembly on synthetic tables, its rendering, and the review rule's
run on synthetic inputs, with and without the local member's keypoint correspondences (tables:
tests/helpers_review.py). The page the tiny run builds and the page
in headless Chromium are in tests/workflow/test_review.py."""

import json
import logging
import re

import numpy as np
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
    _write_correspondences,
)

from flukeline.cli import build_parser
from flukeline.core.errors import InputError
from flukeline.review.page import (
    assemble_review,
    attach_correspondences,
    render_page,
    representative_images,
    run,
    validate_correspondences,
)


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


def _with_matches(table: pd.DataFrame) -> dict:
    train, test, predictions, topk = _tables()
    data = assemble_review(test, train, predictions, topk, threshold=0.9)
    counts = attach_correspondences(data, validate_correspondences(table, "c.parquet"), train, "c.parquet")
    return data, counts


def test_attach_correspondences_gives_each_matched_candidate_its_gallery_image_and_points(caplog):
    with caplog.at_level(logging.INFO, logger="flukeline.review.page"):
        data, counts = _with_matches(_correspondences())
    q2, q1 = data["queries"]
    assert data["correspondences"] == ["sift"]
    # q1's candidates: w_a, new_whale, w_b. w_a was matched on t1.jpg (not its representative t2.jpg).
    w_a = q1["candidates"][0]["matches"]
    assert w_a["gallery"] == "t1.jpg" and q1["candidates"][0]["reference"] == "t2.jpg"
    assert w_a["inliers"] == 23 and w_a["probability"] == 0.93 and w_a["method"] == "sift"
    assert w_a["query_xy"] == Q1_WA_QUERY_XY and w_a["gallery_xy"] == Q1_WA_GALLERY_XY
    assert "matches" not in q1["candidates"][1]  # new_whale
    assert q1["candidates"][2]["matches"]["inliers"] == 0 and q1["candidates"][2]["matches"]["query_xy"] == []
    # q2's candidates: new_whale, w_b, w_a; no row for w_a.
    assert q2["candidates"][1]["matches"]["query_xy"] == [0.2, 0.3, 0.7, 0.4]
    assert "matches" not in q2["candidates"][2] and "matches" not in q2["candidates"][0]
    # q9.jpg is no test image, w_z is not among q2's candidates: both ignored and counted.
    assert counts == {"attached": 3, "not_a_query": 1, "not_a_candidate": 1}
    assert "ignored 1 row(s) of images that are no test query and 1 of identities" in caplog.text
    # The page's data is JSON (no numpy values left).
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_page_without_correspondences_has_no_matches():
    train, test, predictions, topk = _tables()
    data = assemble_review(test, train, predictions, topk, threshold=0.9)
    assert data["correspondences"] == []
    assert not any("matches" in c for q in data["queries"] for c in q["candidates"])


def test_validate_correspondences_clips_rounding_at_the_border_and_reads_null_lists_as_no_points():
    table = _correspondences()
    table.at[0, "query_xy"] = [1.0005, -0.0004, *Q1_WA_QUERY_XY[2:]]
    table.at[1, "query_xy"] = None
    table.at[1, "gallery_xy"] = None
    checked = validate_correspondences(table, "c.parquet")
    assert checked.at[0, "query_xy"][:2].tolist() == [1.0, 0.0]
    assert len(checked.at[1, "query_xy"]) == 0 and len(checked.at[1, "gallery_xy"]) == 0


def _broken(*cells) -> pd.DataFrame:
    """_correspondences() with cells (row, column, value) replaced."""
    table = _correspondences()
    for row, column, value in cells:
        table.at[row, column] = value
    return table


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_correspondences().drop(columns=["gallery_xy", "method"]), r"missing column\(s\) \['method', 'gallery_xy'\]"),
        (_broken((2, "gallery_xy", [0.2, 0.3])), r"query_xy and gallery_xy differ in length in 1 row"),
        (
            _broken((2, "query_xy", [0.2, 0.3, 0.7]), (2, "gallery_xy", [0.2, 0.3, 0.7])),
            r"query_xy has an odd number of values .* query q2\.jpg gallery t3\.jpg",
        ),
        (_broken((2, "gallery_xy", [0.2, 1.01, 0.7, 0.4])), r"gallery_xy has values outside \[0, 1\]"),
        (_broken((2, "query_xy", [-0.01, 0.3, 0.7, 0.4])), r"query_xy has values outside \[0, 1\]"),
        (_broken((0, "query_xy", [np.nan, *Q1_WA_QUERY_XY[1:]])), r"query_xy has values outside \[0, 1\]"),
        (_broken((2, "query_xy", ["a", "b", "c", "d"])), r"query_xy is not a list of numbers"),
        (_broken((1, "gallery_id", "w_a")), r"more than one row per query and gallery_id: 2 row"),
        (_broken((0, "probability", 1.5)), r"probability outside \[0, 1\]"),
        (_broken((0, "inliers", -1)), r"inliers not a non-negative whole number"),
    ],
    ids="columns unequal odd above-1 below-0 nan not-numbers duplicate probability inliers".split(),
)
def test_validate_correspondences_names_the_file_and_the_problem(table, message):
    with pytest.raises(InputError, match=r"^c\.parquet: " + message):
        validate_correspondences(table, "c.parquet")


def test_attach_correspondences_rejects_a_gallery_image_the_train_table_does_not_know_or_disagrees_on():
    with pytest.raises(InputError, match=r"c\.parquet: gallery image t7\.jpg \(query q1\.jpg\) is not in the train"):
        _with_matches(_broken((0, "gallery", "t7.jpg")))
    with pytest.raises(InputError, match=r"gallery image t3\.jpg is w_b in the train table, not gallery_id w_a"):
        _with_matches(_broken((0, "gallery", "t3.jpg")))


def test_run_with_correspondences_embeds_the_matched_gallery_crops_only(tmp_path):
    summary = {"threshold": 0.9, "score": "similarity"}
    (tmp_path / "plain").mkdir()
    (tmp_path / "matched").mkdir()
    plain = _synthetic_run(tmp_path / "plain", _tables()[3], summary)
    run(**plain)
    paths = _synthetic_run(tmp_path / "matched", _tables()[3], summary, _correspondences())
    # Through the command line, as the review rule runs it.
    argv = ["review", *(f"--{k.removesuffix('_path')}={v}" for k, v in paths.items())]
    args = build_parser().parse_args(argv)
    assert args.correspondences_path == str(paths["correspondences_path"])
    args.func(args)
    before, data = _page_data(plain["out"]), _page_data(paths["out"])
    # t1.jpg (w_a's non-representative image, matched for q1) gains its crop, not its photo.
    assert set(data["images"]) - set(before["images"]) == {"train/t1.jpg/crop"}
    q1 = data["queries"][1]
    assert q1["candidates"][0]["matches"]["gallery"] == "t1.jpg"
    # float32 in the file, 3 decimals in the page.
    assert q1["candidates"][0]["matches"]["query_xy"] == Q1_WA_QUERY_XY
    assert q1["candidates"][0]["matches"]["probability"] == 0.93
    assert data["correspondences"] == ["sift"] and before["correspondences"] == []


def test_run_names_the_correspondences_file_it_rejects(tmp_path):
    paths = _synthetic_run(tmp_path, _tables()[3], {"threshold": 0.9, "score": "similarity"})
    bad = _correspondences().drop(columns=["probability"])
    bad["probability"] = 0.5
    bad.at[0, "gallery_xy"] = [0.5, 0.5]
    path = _write_correspondences(bad, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=re.escape(str(path)) + r": query_xy and gallery_xy differ in length"):
        run(**paths, correspondences_path=path)
