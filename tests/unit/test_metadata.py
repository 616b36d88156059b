"""Date, place and side metadata (flukeline.data.metadata): parsing, validation messages, and
ingest carrying the columns into train.parquet / test.parquet."""

import logging

import pandas as pd
import pytest
from test_accept import _run as _accept_run
from test_ingest import good_layout, run

from flukeline.catalogue.accept import accept
from flukeline.core.errors import InputError
from flukeline.data.ingest import ingest
from flukeline.data.metadata import column_map, parse_date, parse_viewpoint, read_metadata


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-07-03", "2024-07-03"),
        (" 2024-07-03T14:05 ", "2024-07-03T14:05"),
        ("2024-07-03 14:05:33", "2024-07-03T14:05:33"),
        ("2024-07-03T14:05+02:00", "2024-07-03T12:05"),
        ("2024-07-03T23:30:00Z", "2024-07-03T23:30:00"),
    ],
)
def test_dates_are_normalised_to_iso(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["03/07/2024", "2024-02-30", "2024-07-03T25:00", "July 3rd", "2024-7-3"])
def test_bad_dates_are_refused(text):
    with pytest.raises(ValueError):
        parse_date(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("left", "left"),
        ("L", "left"),
        ("r", "right"),
        ("Front-Left", "front-left"),
        ("left front", "front-left"),
        ("FRONT_RIGHT", "front-right"),
        ("frontleft", "front-left"),
        ("upfrontleft", "top-front-left"),
        ("back", "back"),
        ("Dorsal", "top"),
    ],
)
def test_viewpoint_spellings(text, expected):
    assert parse_viewpoint(text) == expected


@pytest.mark.parametrize("text", ["left-right", "sideways", "x", "front back", "lr"])
def test_bad_viewpoints_are_refused(text):
    with pytest.raises(ValueError):
        parse_viewpoint(text)


def test_column_names_in_any_case_and_common_aliases():
    assert column_map(["Image", "Id", "Date", "SITE", "Lat", "lon", "Side", "photographer"]) == {
        "Date": "date",
        "SITE": "location",
        "Lat": "latitude",
        "lon": "longitude",
        "Side": "viewpoint",
    }


def test_every_problem_named_with_file_line_and_value(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text(
        "Image,Id,Date,Latitude,Longitude,Viewpoint\n"
        "a.jpg,w_1,2024-13-01,10,20,left\n"
        "b.jpg,w_1,2024-01-01,95,20,left\n"
        "c.jpg,w_1,,10,,sideways\n"
        "d.jpg,w_1,2024-01-01,-33.9,18.4,R\n"
    )
    with pytest.raises(InputError) as error:
        read_metadata([csv])
    message = str(error.value)
    assert "train.csv line 2: date '2024-13-01'" in message
    assert "train.csv line 3: latitude '95'" in message and "outside [-90, 90]" in message
    assert "train.csv line 4: viewpoint 'sideways'" in message
    assert "train.csv line 4: latitude '10' without a longitude" in message
    assert "line 5" not in message


def test_a_later_source_wins_and_empty_cells_stay_unknown(tmp_path):
    first, second = tmp_path / "sample_submission.csv", tmp_path / "test.csv"
    first.write_text("Image,Id,location\nq1.jpg,new_whale,Bay\nq2.jpg,new_whale,Bay\n")
    second.write_text("Image,Location,viewpoint\nq1.jpg,Cove,l\nq2.jpg,,\n")
    found = read_metadata([first, second, tmp_path / "absent.csv", None])
    assert found.columns == ["location", "viewpoint"]
    assert found.values["q1.jpg"] == {"location": "Cove", "viewpoint": "left"}
    assert found.values["q2.jpg"] == {"location": "Bay"}


def test_metadata_without_an_image_column_is_an_error(tmp_path):
    csv = tmp_path / "test.csv"
    csv.write_text("photo,date\nq1.jpg,2024-01-01\n")
    with pytest.raises(InputError, match="test.csv: metadata column"):
        read_metadata([csv])


def test_ingest_carries_the_columns_into_the_tables(tmp_path, caplog):
    root = good_layout(tmp_path / "data", submission=["t1.jpeg", "t2.JPG", "t3.png"])
    table = pd.read_csv(root / "train.csv")
    table["Date"] = ["2023-06-01", "2023-06-01T10:00", "", "2022-01-05", "2022-01-05", "", "", "2021-12-31"]
    table["Location"] = ["Bay", "Bay", "Cove", "", "Cove", "", "", "Bay"]
    table.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": ["t1.jpeg", "t3.png", "gone.jpg"], "side": ["L", "front right", "left"]}).to_csv(
        root / "test.csv", index=False
    )
    with caplog.at_level(logging.WARNING):
        train, test, _, _ = run(root)
    assert "ignoring unknown column" not in caplog.text
    assert "metadata of 1 photo(s) not among the test photos" in caplog.text and "gone.jpg" in caplog.text
    by_image = train.set_index("image")
    assert by_image.loc["a2.jpg", "date"] == "2023-06-01T10:00" and by_image.loc["a3.jpg", "date"] == ""
    assert by_image.loc["grey.jpg", "location"] == "" and by_image.loc["b2.jpg", "location"] == "Cove"
    assert "viewpoint" not in train.columns and "latitude" not in train.columns
    assert test.set_index("image")["viewpoint"].to_dict() == {"t1.jpeg": "left", "t2.JPG": "", "t3.png": "front-right"}
    assert "date" not in test.columns


def test_ingest_refuses_bad_metadata_before_decoding(tmp_path):
    root = good_layout(tmp_path / "data")
    table = pd.read_csv(root / "train.csv")
    table["viewpoint"] = ["left"] * 7 + ["upside"]
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(InputError, match=r"train.csv line 9: viewpoint 'upside'"):
        run(root)


def test_without_metadata_the_tables_keep_their_columns(tmp_path):
    train, test, _, _ = run(good_layout(tmp_path / "data"))
    assert not {"date", "location", "latitude", "longitude", "viewpoint"} & (set(train) | set(test))


def test_accept_keeps_the_metadata_in_the_catalogue_and_ingest_reads_it_back(tmp_path):
    root, train, test = _accept_run(tmp_path)
    pd.DataFrame(
        {"Image": ["q0.png", "q1.png"], "date": ["2024-07-03", "2024-07-04T09:30"], "side": ["L", "r"]}
    ).to_csv(root / "test.csv", index=False)
    ingest(root, train, test, tmp_path / "results" / "rejected.csv", {"folds": 2})
    export = tmp_path / "review.csv"
    pd.DataFrame(
        [["q0.png", "match", "w_a"], ["q1.png", "new", "new_whale"]], columns=["Image", "decision", "Id"]
    ).to_csv(export, index=False)
    accept(export, test, train, tmp_path / "catalogue")
    first = pd.read_csv(tmp_path / "catalogue" / "catalogue-0001.csv", dtype=str, keep_default_na=False)
    assert first[["Image", "date", "viewpoint"]].values.tolist() == [
        ["q0.png", "2024-07-03", "left"],
        ["q1.png", "2024-07-04T09:30", "right"],
    ]
    # A later accept without metadata in the test table keeps the earlier rows' values.
    (root / "test.csv").unlink()
    ingest(root, train, test, tmp_path / "results" / "rejected.csv", {"folds": 2})
    pd.DataFrame([["q2.png", "new", ""]], columns=["Image", "decision", "Id"]).to_csv(export, index=False)
    accept(export, test, train, tmp_path / "catalogue")
    second = pd.read_csv(tmp_path / "catalogue" / "catalogue-0002.csv", dtype=str, keep_default_na=False)
    assert second["viewpoint"].tolist() == ["left", "right", ""]
    # What the next run's ingest reads as the training rows' metadata (read_metadata of the catalogue).
    again = read_metadata([tmp_path / "catalogue" / "catalogue-0002.csv"])
    assert again.values["q1.png"] == {"date": "2024-07-04T09:30", "viewpoint": "right"}


def test_decisions_and_the_review_page_carry_the_metadata():
    from helpers_review import _tables
    from test_decisions import _run_tables

    from flukeline.match.decisions import decide
    from flukeline.match.settings import DecisionSettings
    from flukeline.review.page import assemble_review

    val, test_topk, train, test, _ = _run_tables(n_test=3)
    test = test.assign(date=["2024-07-03", "", "2024-07-05"], viewpoint=["left", "right", ""])
    table, _, _, _ = decide(val, test_topk, train, test, DecisionSettings())
    assert table[["date", "viewpoint"]].values.tolist() == [["2024-07-03", "left"], ["", "right"], ["2024-07-05", ""]]

    train, test, predictions, topk = _tables()
    test = test.assign(location=["Bay", ""], latitude=[-33.9, float("nan")], longitude=[18.4, float("nan")])
    data = assemble_review(test, train, predictions, topk, threshold=0.9)
    assert [q["metadata"] for q in data["queries"]] == ["Bay · -33.9000, 18.4000", ""]
    train, test, predictions, topk = _tables()
    plain = assemble_review(test, train, predictions, topk, threshold=0.9)
    assert all("metadata" not in q for q in plain["queries"])
