"""`flukeline export` (flukeline.export): Chapman's estimate and its interval, the MARK .inp writer
and a parser of MARK's documented format, the tidy capture histories, the Darwin Core table and
its checks, the discovery curve, the pending photos' range, and the refusals naming file and
line. On small tables written here (no photos: the export reads none), seconds."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.cli import main
from flukeline.core.errors import InputError
from flukeline.export.abundance import abundance, chapman
from flukeline.export.capture_histories import (
    capture_histories,
    histories_from_tidy,
    inp_text,
    parse_inp,
    read_inp,
    tidy_table,
)
from flukeline.export.darwin_core import TERMS, darwin_core_problems
from flukeline.export.discovery import discovery_curve, resighting
from flukeline.export.occasions import season_label
from flukeline.export.run import run_export
from flukeline.export.settings import BASIS_OF_RECORD, ExportSettings

# --------------------------------------------------------------------------------- Chapman


def test_chapman_matches_the_published_values():
    # recapr's reference values (NChapman, vChapman, seChapman, ciChapman's normal interval) for
    # n1 = n2 = 100 marked and caught, m2 = 20 recaptured: N = 101 * 101 / 21 - 1.
    estimate = chapman(100, 100, 20)
    assert estimate.estimate == pytest.approx(484.7619, abs=1e-4)
    assert estimate.se**2 == pytest.approx(6729.169, abs=1e-3)
    assert estimate.se == pytest.approx(82.03151, abs=1e-5)
    assert sum(estimate.normal_interval) == pytest.approx(969.5238, abs=1e-3)
    # Chao's log-normal interval: asymmetric, above the 180 animals seen, around the estimate.
    low, high = estimate.interval
    assert 180 < low < estimate.estimate < high
    assert high - estimate.estimate > estimate.estimate - low


def test_chapman_edge_cases():
    # Everyone seen twice: nothing unseen, a zero-width interval at the animals seen.
    assert chapman(10, 10, 10).interval == (10.0, 10.0)
    # No recapture: still finite (Chapman's +1s), the interval above the 10 seen.
    none = chapman(5, 5, 0)
    assert none.estimate == 35.0 and none.interval[0] > 10
    with pytest.raises(ValueError, match="m2 <= min"):
        chapman(3, 5, 4)


def test_chapman_interval_covers_the_truth_95_percent_of_the_time():
    """Closed population, equal catchability: the log-normal interval's coverage is near 95%."""
    rng = np.random.default_rng(0)
    population, p, runs = 400, 0.3, 3000
    covered = 0
    for _ in range(runs):
        first, second = rng.random(population) < p, rng.random(population) < p
        low, high = chapman(int(first.sum()), int(second.sum()), int((first & second).sum())).interval
        covered += low <= population <= high
    assert 0.93 <= covered / runs <= 0.97


def test_abundance_spans_the_pending_photos_extremes():
    s = pd.DataFrame(
        {
            "individual": ["a", "b", "c", "a", "b", "", ""],
            "status": ["reviewed"] * 3 + ["auto-accepted"] * 2 + ["provisional"] * 2,
            "occasion": ["2022"] * 3 + ["2023"] * 4,
            "candidate": ["", "", "", "", "", "c", "a"],
            "new_individual": ["", "", "", "", "", "new:e1", "new:e2"],
            "p_correct": [np.nan] * 5 + [0.7, 0.1],
            "p_new": [np.nan] * 5 + [0.2, 0.8],
        }
    )
    result = abundance(s, ["2022", "2023"])
    estimates = result["estimates"]
    assert (estimates["decided"]["n2"], estimates["decided"]["m2"]) == (2, 2)
    assert (estimates["all_matches"]["n2"], estimates["all_matches"]["m2"]) == (3, 3)  # c and a: both known
    assert (estimates["all_new"]["n2"], estimates["all_new"]["m2"]) == (4, 2)
    assert (estimates["most_likely"]["n2"], estimates["most_likely"]["m2"]) == (4, 3)  # c matched, e2 new
    assert result["range"] == [estimates["all_matches"]["estimate"], estimates["all_new"]["estimate"]]
    with pytest.raises(InputError, match="'2024' is no occasion"):
        abundance(s, ["2022", "2023"], ("2022", "2024"))
    assert abundance(s, ["2022"])["estimates"] is None


# ------------------------------------------------------------------------- capture histories


def _histories():
    sightings = pd.DataFrame(
        {
            "individual": ["w_b", "w_a", "w_a", "w c", "w_b"],
            "occasion": ["2019", "2019", "2021", "2020", "2019"],
            "location": ["Bay", "Bay", "Cove", "", "Cove"],
        }
    )
    return sightings, capture_histories(sightings, ["2019", "2020", "2021"])


def test_inp_round_trips_through_the_parser():
    _, histories = _histories()
    assert [histories.history(i) for i in range(3)] == ["010", "101", "100"]  # w c, w_a, w_b
    text = inp_text(histories, "three individuals")
    records = parse_inp(text, "h.inp")
    assert [(r.comment, r.history, r.frequencies, r.covariates) for r in records] == [
        ("w c", "010", (1,), ()),
        ("w_a", "101", (1,), ()),
        ("w_b", "100", (1,), ()),
    ]
    assert [r.line for r in records] == [5, 6, 7]  # after the title and the three occasion comments


def test_parser_reads_mark_format_with_groups_covariates_and_records_over_lines(tmp_path):
    # MARK's format: history, one frequency per group, covariates, ';'; /* comments */ anywhere.
    path = tmp_path / "dipper.inp"
    path.write_text("/* two groups, weight */\n1001 1 0 10.5;\n1101 0 2 5 ;\n/* a */ 0101\n  3 1\n 6; /* trailing */\n")
    records = read_inp(path, groups=2)
    assert [(r.line, r.comment, r.history, r.frequencies, r.covariates) for r in records] == [
        (2, "two groups, weight", "1001", (1, 0), (10.5,)),
        (3, "", "1101", (0, 2), (5.0,)),
        (4, "a", "0101", (3, 1), (6.0,)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1001 1;\n0101 1\n", r"h\.inp line 2: the last record does not end with a semicolon"),
        ("1001 1;\n10x1 1;\n", r"h\.inp line 2: encounter history '10x1' is not a string of 0, 1 and \."),
        ("1001 1;\n/* b */ 101 1;\n", r"h\.inp line 2: history '101' has 3 occasions, line 1's has 4"),
        ("1001 1;\n/* open\n0101 1;\n", r"h\.inp line 2: a comment /\* is never closed"),
        ("1001 one;\n", r"h\.inp line 1: frequencies \['one'\] are not all integers"),
    ],
)
def test_parser_names_the_line_of_each_problem(text, message):
    with pytest.raises(InputError, match=message):
        parse_inp(text, "h.inp")


def test_tidy_csv_round_trips_to_the_same_histories(tmp_path):
    sightings, histories = _histories()
    table = tidy_table(sightings, histories)
    # One row per individual, occasion and site; the first four columns are secr's Session ID Occasion Detector.
    assert table[["individual", "occasion", "site", "photos"]].values.tolist() == [
        ["w c", 2, "", 1],
        ["w_a", 1, "Bay", 1],
        ["w_a", 3, "Cove", 1],
        ["w_b", 1, "Bay", 1],
        ["w_b", 1, "Cove", 1],
    ]
    table.to_csv(tmp_path / "h.csv", index=False)
    read = pd.read_csv(tmp_path / "h.csv", dtype=str, keep_default_na=False)
    back = histories_from_tidy(read, histories.occasions)
    assert back.individuals == histories.individuals and (back.matrix == histories.matrix).all()
    with pytest.raises(InputError, match="occasion 2 labelled '2021'"):
        histories_from_tidy(
            read.assign(occasion_label=read["occasion_label"].replace("2020", "2021")), ["2019", "2020", "2021"]
        )


def test_season_labels():
    from datetime import date

    assert season_label(date(2023, 2, 1), 1) == "2023"
    assert season_label(date(2023, 8, 1), 7) == "2023/2024"
    assert season_label(date(2024, 6, 30), 7) == "2023/2024"


# ----------------------------------------------------------------------------- discovery


def test_discovery_curve_counts_individuals_in_time_order():
    sightings = pd.DataFrame(
        {
            "image": ["p1", "p2", "p3", "p4", "p5"],
            "individual": ["a", "b", "a", "c", ""],
            "date": ["2023-01-03", "2023-01-01", "2023-01-02", "", "2023-01-01"],
        }
    )
    curve = discovery_curve(sightings)
    # Dated photos by date (p2, p3, p1), the undated after them; p5 has no individual.
    assert curve["image"].tolist() == ["p2", "p3", "p1", "p4"]
    assert curve["individuals"].tolist() == [1, 2, 2, 3]
    assert curve["new"].tolist() == [True, True, False, True]


def test_resighting_frequencies():
    confirmed = pd.DataFrame({"individual": ["a", "a", "a", "b", "c"], "occasion": ["1", "2", "2", "1", ""]})
    result = resighting(confirmed)
    assert result["by_occasions"] == {1: 1, 2: 1}  # c is undated: no occasion
    assert result["by_photos"] == {1: 2, 3: 1}
    assert (result["individuals"], result["resighted_individuals"]) == (3, 1)


# --------------------------------------------------------------------------- the command


def _project(tmp_path, train_dates=None, test_dates=None, encounters=None):
    """A run's tables: 4 training photos (w_a twice, w_b, one new_whale), 4 test photos decided
    match / new / review / review, and train.csv for the line numbers."""
    train_dates = train_dates or ["2022-07-01", "2022-07-02", "2022-08-01", "2022-08-02"]
    test_dates = test_dates or ["2023-07-01", "2023-07-02", "2023-07-03", "2023-07-04"]
    encounters = encounters or ["e1", "e2", "e3", "e4"]
    train = pd.DataFrame(
        {
            "image": ["t1.jpg", "t2.jpg", "t3.jpg", "t4.jpg"],
            "path": [f"/photos/t{i}.jpg" for i in range(1, 5)],
            "id": ["w_a", "w_a", "w_b", "new_whale"],
            "original_id": ["w_a", "w_a", "w_b", "new_whale"],
            "date": pd.array(train_dates, dtype="string"),
            "location": pd.array(["Bay", "Bay", "Cove", "Bay"], dtype="string"),
            "latitude": [-20.0, -20.0, -21.0, np.nan],
            "longitude": [44.0, 44.0, 44.5, np.nan],
            "encounter": pd.array(["r1", "r2", "r3", "r4"], dtype="string"),
        }
    )
    test = pd.DataFrame(
        {
            "image": ["q1.jpg", "q2.jpg", "q3.jpg", "q4.jpg"],
            "path": [f"/photos/q{i}.jpg" for i in range(1, 5)],
            "encounter": pd.array(encounters, dtype="string"),
        }
    )
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    pd.DataFrame({"Image": train["image"], "Id": train["original_id"], "date": train_dates}).to_csv(
        tmp_path / "train.csv", index=False
    )
    decisions = pd.DataFrame(
        {
            "Image": test["image"],
            "decision": ["match", "new", "review", "review"],
            "Id": ["w_a", "", "", ""],
            "candidate": ["w_a", "w_b", "w_b", "w_a"],
            "p_correct": ["0.99", "0.01", "0.30", "0.10"],
            "p_new": ["0.01", "0.99", "0.60", "0.80"],
            "encounter": encounters,
            "date": test_dates,
            "location": ["Bay", "Cove", "Bay", ""],
            "latitude": ["-20.1", "-21.1", "", ""],
            "longitude": ["44.1", "44.6", "", ""],
            "new_group": ["", "new_0001", "new_0001", ""],
        }
    )
    decisions.to_csv(tmp_path / "decisions.csv", index=False)
    return {
        "train_path": tmp_path / "train.parquet",
        "test_path": tmp_path / "test.parquet",
        "decisions_path": tmp_path / "decisions.csv",
        "train_csv": tmp_path / "train.csv",
        "out_dir": tmp_path / "export",
    }


def test_export_writes_every_photo_once_with_its_status_and_checked_darwin_core(tmp_path):
    paths = _project(tmp_path)
    summary = run_export(**paths)
    out = paths["out_dir"]
    occurrences = pd.read_csv(out / "occurrence.csv", dtype=str, keep_default_na=False).set_index("catalogNumber")
    assert list(pd.read_csv(out / "occurrence.csv", nrows=0).columns) == TERMS
    assert darwin_core_problems(occurrences.reset_index()[TERMS]) == (
        [],
        ["3 occurrence(s) without coordinates: OBIS requires decimalLatitude/decimalLongitude"],  # t4, q3, q4
    )
    assert occurrences["identificationVerificationStatus"].to_dict() == {
        "t1.jpg": "reviewed",
        "t2.jpg": "reviewed",
        "t3.jpg": "reviewed",
        "t4.jpg": "unidentified",
        "q1.jpg": "auto-accepted",
        "q2.jpg": "auto-accepted",
        "q3.jpg": "provisional",
        "q4.jpg": "provisional",
    }
    # The automatic new individual keeps its group's provisional id; pending photos have none.
    assert occurrences["organismID"].tolist() == ["w_a", "w_a", "w_b", "", "w_a", "new_0001", "", ""]
    assert occurrences.loc["q3.jpg", "identificationRemarks"] == (
        "pending review: best candidate w_b (P right 0.300); P(new individual) 0.600"
    )
    assert occurrences.loc["q1.jpg", ["eventDate", "decimalLatitude", "geodeticDatum", "occurrenceID"]].tolist() == [
        "2023-07-01",
        "-20.1",
        "EPSG:4326",
        "flukeline:q1.jpg",
    ]
    assert occurrences.loc["q1.jpg", "associatedMedia"] == "/photos/q1.jpg"

    # Capture histories over the two seasons: w_a in both, w_b in 2022, new_0001 in 2023.
    records = read_inp(out / "capture_histories.inp")
    assert {r.comment: r.history for r in records} == {"new_0001": "01", "w_a": "11", "w_b": "10"}
    sightings = pd.read_csv(out / "sightings.csv", keep_default_na=False).set_index("individual")
    assert sightings.loc["w_a", ["first_seen", "last_seen", "photos", "occasions", "sites"]].tolist() == [
        "2022-07-01",
        "2023-07-01",
        3,
        2,
        "Bay",
    ]
    decided = summary["abundance"]["estimates"]["decided"]
    assert (decided["n1"], decided["n2"], decided["m2"]) == (2, 2, 1)
    # All new: q3 joins new_0001 (its group), q4 is new:e4; all matches: w_b and w_a.
    assert summary["abundance"]["estimates"]["all_new"]["n2"] == 3
    assert summary["abundance"]["estimates"]["all_matches"]["m2"] == 2
    assert summary["sightings"]["by_status"] == {"auto-accepted": 2, "provisional": 2, "reviewed": 3, "unidentified": 1}
    assert "Chapman" in (out / "section.html").read_text()


def test_a_catalogue_version_makes_its_photos_reviewed(tmp_path):
    paths = _project(tmp_path)
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    pd.DataFrame(
        {
            "Image": ["q3.jpg", "q4.jpg"],
            "Id": ["w_b", "flk_0001"],
            "path": ["photos/q3.jpg", "photos/q4.jpg"],
            "decision": ["match", "new"],
            "encounter": ["e3", "e4"],
            "source": "review.csv",
            "date": ["2023-07-03", "2023-07-04"],
        }
    ).to_csv(catalogue / "catalogue-0001.csv", index=False)
    summary = run_export(**paths, catalogue_path=catalogue)
    occurrences = pd.read_csv(paths["out_dir"] / "occurrence.csv", dtype=str, keep_default_na=False)
    assert occurrences["catalogNumber"].is_unique and len(occurrences) == 8
    reviewed = occurrences.set_index("catalogNumber").loc[["q3.jpg", "q4.jpg"]]
    assert reviewed["organismID"].tolist() == ["w_b", "flk_0001"]
    assert set(reviewed["identificationVerificationStatus"]) == {"reviewed"}
    assert reviewed["associatedMedia"].tolist() == [str(catalogue / "photos/q3.jpg"), str(catalogue / "photos/q4.jpg")]
    assert summary["sightings"]["superseded_by_catalogue"] == 2
    assert summary["abundance"]["pending_photos"] == 0
    assert summary["abundance"]["range"][0] == summary["abundance"]["range"][1]


def test_undated_photos_are_refused_with_file_and_line(tmp_path):
    paths = _project(tmp_path, train_dates=["2022-07-01", "", "2022-08-01", "2022-08-02"])
    decisions = pd.read_csv(paths["decisions_path"], dtype=str, keep_default_na=False)
    decisions.loc[1, "date"] = ""
    decisions.to_csv(paths["decisions_path"], index=False)
    with pytest.raises(InputError) as error:
        run_export(**paths)
    message = str(error.value)
    assert message.startswith("2 problem(s), nothing exported:")
    assert "train.csv line 3: photo 't2.jpg' (reviewed, w_a) has no date" in message
    assert "decisions.csv line 3: photo 'q2.jpg' (auto-accepted, new_0001) has no date" in message
    assert not paths["out_dir"].exists()
    # No date anywhere: one line says so.
    train = pd.read_parquet(paths["train_path"]).drop(columns="date")
    train.to_parquet(paths["train_path"])
    decisions.drop(columns="date").to_csv(paths["decisions_path"], index=False)
    with pytest.raises(InputError, match=r"^1 problem\(s\), nothing exported:\nnone of the 8 photos has a date \(the"
                       r" first: train\.csv line 2, photo 't1\.jpg'\)"):  # fmt: skip
        run_export(**paths)
    # The CLI: a one-line error, exit 1.
    args = ["export", "--train", str(paths["train_path"]), "--test", str(paths["test_path"])]
    args += ["--decisions", str(paths["decisions_path"]), "--out", str(paths["out_dir"])]
    assert main(args) == 1


def test_undated_left_out_and_dates_from_encounters(tmp_path):
    # q2 has no date but shares encounter e1 with q1: it takes q1's day; t2 stays undated.
    paths = _project(
        tmp_path, train_dates=["2022-07-01", "", "2022-08-01", "2022-08-02"], encounters=["e1", "e1", "e3", "e4"]
    )
    decisions = pd.read_csv(paths["decisions_path"], dtype=str, keep_default_na=False)
    decisions.loc[1, "date"] = ""
    decisions.to_csv(paths["decisions_path"], index=False)
    summary = run_export(**paths, params={"undated": "leave_out"})
    assert summary["sightings"]["dates_from_encounter"] == 1
    assert summary["sightings"]["undated_left_out_rows"] == ["train.csv line 3: t2.jpg"]
    occurrences = pd.read_csv(paths["out_dir"] / "occurrence.csv", dtype=str, keep_default_na=False)
    assert "t2.jpg" not in set(occurrences["catalogNumber"]) and len(occurrences) == 7
    assert occurrences.set_index("catalogNumber").loc["q2.jpg", "eventDate"] == "2023-07-01"
    # Still a sighting of w_a in the per-individual table (3 photos, 2 of them dated).
    sightings = pd.read_csv(paths["out_dir"] / "sightings.csv").set_index("individual")
    assert sightings.loc["w_a", "photos"] == 3


def test_occasion_encounter_refuses_an_encounter_over_several_days(tmp_path):
    paths = _project(tmp_path, encounters=["e1", "e1", "e3", "e4"])
    with pytest.raises(InputError, match=r"decisions\.csv line 3: photo 'q2\.jpg' is dated 2023-07-02, but encounter"
                       r" 'e1' began on 2023-07-01 \(decisions\.csv line 2\)"):  # fmt: skip
        run_export(**paths, params={"occasion": "encounter"})
    summary = run_export(**paths, params={"occasion": "day"})
    assert [o["label"] for o in summary["occasions"]][:2] == ["2022-07-01", "2022-07-02"]


def test_malformed_rows_are_named(tmp_path):
    paths = _project(tmp_path)
    decisions = pd.read_csv(paths["decisions_path"], dtype=str, keep_default_na=False)
    decisions.loc[0, "Id"] = ""
    decisions.loc[2, "decision"] = "maybe"
    decisions.loc[3, "latitude"] = "-95"
    decisions.loc[3, "longitude"] = "44"
    decisions.to_csv(paths["decisions_path"], index=False)
    with pytest.raises(InputError) as error:
        run_export(**paths)
    lines = str(error.value).splitlines()[1:]
    assert lines == [
        "decisions.csv line 2: match for photo 'q1.jpg' names no individual (Id '')",
        "decisions.csv line 4: decision 'maybe' for photo 'q3.jpg' is none of match, new, review",
        "decisions.csv line 5: latitude '-95': latitude outside [-90, 90]",
        "decisions.csv line 5: longitude '44' without a latitude",
    ]


def test_darwin_core_checks_catch_what_validators_reject():
    good = pd.DataFrame(
        {term: ["x", "y"] for term in TERMS}
        | {
            "occurrenceID": ["a:1", "a:2"],
            "basisOfRecord": "HumanObservation",
            "occurrenceStatus": "present",
            "eventDate": ["2023-07-01", "2023-07-01T14:05"],
            "decimalLatitude": ["-20.5", ""],
            "decimalLongitude": ["44", ""],
            "geodeticDatum": ["EPSG:4326", ""],
            "individualCount": "1",
            "identificationVerificationStatus": ["reviewed", "provisional"],
        }
    )
    assert darwin_core_problems(good)[0] == []
    bad = good.assign(
        occurrenceID=["a:1", "a:1"],
        basisOfRecord=["HumanObservation", "Sighting"],
        eventDate=["2023-13", "07/01/2023"],
        decimalLatitude=["95", "x"],
        decimalLongitude=["44", ""],
    )
    assert darwin_core_problems(bad)[0] == [
        "line 3: occurrenceID 'a:1' is not unique",
        f"line 3: basisOfRecord 'Sighting' is none of {', '.join(BASIS_OF_RECORD)}",
        "line 2: eventDate '2023-13' is not ISO 8601",
        "line 3: eventDate '07/01/2023' is not ISO 8601",
        "line 3: decimalLatitude 'x' is not a number",
        "line 2: decimalLatitude '95' outside [-90, 90]",
        "line 3: only one of decimalLatitude / decimalLongitude",
        "line 3: coordinates without geodeticDatum",
    ]  # fmt: skip
    assert darwin_core_problems(good.drop(columns="eventDate"))[0] == ["missing column eventDate"]


def test_settings_refuse_unknown_values():
    with pytest.raises(InputError, match="occasion 'week' is none of day, month, season, encounter"):
        ExportSettings(occasion="week")
    with pytest.raises(InputError, match="abundance_occasions \\['2022'\\]: give two occasions"):
        ExportSettings.from_dict({"abundance_occasions": ["2022"]})


def test_cli_export_prints_the_files_and_estimate(tmp_path, capsys):
    paths = _project(tmp_path)
    args = ["export", "--train", str(paths["train_path"]), "--test", str(paths["test_path"])]
    args += ["--decisions", str(paths["decisions_path"]), "--out", str(paths["out_dir"])]
    args += ["--params", json.dumps({"abundance_occasions": ["2022", "2023"], "identified_by": "A. Person"})]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["abundance"]["occasions"] == ["2022", "2023"]
    occurrences = pd.read_csv(paths["out_dir"] / "occurrence.csv", dtype=str, keep_default_na=False)
    assert (
        occurrences.loc[occurrences["identificationVerificationStatus"] == "reviewed", "identifiedBy"]
        .eq("A. Person")
        .all()
    )
