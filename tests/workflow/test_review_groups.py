"""The review page of a run with date, place and side metadata and a group of new individuals
(match/new_groups.py), in headless Chromium: the group labelled, kept together, and its "New"
exported with the group's provisional id, which `flukeline accept` takes as one animal."""

import csv
import io
from pathlib import Path

import pandas as pd
from helpers_review import _synthetic_run, _tables

from flukeline.review.page import run


def test_a_new_group_is_labelled_and_exported_with_its_provisional_id(tmp_path, chromium):
    paths = _synthetic_run(tmp_path, _tables()[3], {"threshold": 0.9, "score": "similarity"})
    test = pd.read_parquet(paths["test_path"]).assign(location=["Bay", "Cove"], viewpoint=["left", ""])
    test.to_parquet(paths["test_path"])
    decisions = pd.DataFrame(
        {
            "Image": test["image"],
            "decision": ["new", "review"],
            "Id": ["", ""],
            "candidate": ["w_b", "w_a"],
            "p_correct": [0.1, 0.3],
            "p_new": [0.9, 0.6],
            "new_group": ["new_0001", "new_0001"],
        }
    )
    decisions.to_csv(tmp_path / "decisions.csv", index=False)
    run(**paths, decisions_path=tmp_path / "decisions.csv")
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(paths["out"].as_uri())
    for image, place in (("q2.jpg", "Bay · left"), ("q1.jpg", "Cove")):
        head = page.inner_text(f'li.query[data-image="{image}"] .query-head')
        assert "new individual new_0001 (2 photos)" in head and place in head
    page.click('li.query[data-image="q1.jpg"] button.new')
    page.click('li.query[data-image="q2.jpg"] button.new')
    assert page.get_attribute('li.query[data-image="q1.jpg"] button.new', "aria-pressed") == "true"
    with page.expect_download() as download:
        page.click("#export")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == ["Image", "decision", "Id"]
    assert sorted(rows[1:]) == [["q1.jpg", "new", "new_0001"], ["q2.jpg", "new", "new_0001"]]
    assert errors == []
    context.close()
