"""`flukeline export` measured on a finished demo run with the field records (the demo with
`data.demo.overrides: {metadata: true, flanks: true, new_test_photos: 3}`, dates over the seasons
2019-2023 and a site per encounter), before and after one accept cycle (issue 32).

1. The run is hard-linked into --work (nothing is written into it) and exported as it is: the
   decided photos and the `review` photos pending.
2. One accept cycle: a reviewer who knows the demo's truth decides every pending photo (a known
   animal: a match to its true id; a new one: `new` with one provisional id per true animal, as
   the review page's groups export it), `flukeline accept` writes catalogue-0001.csv, and the
   export runs again with that catalogue version (the reviewed photos now the catalogue's).

Each export is checked as a user's tools would read it: occurrence.csv read by pandas and
checked against the Darwin Core terms GBIF and OBIS require (export/darwin_core.py), every
photo of the run exactly once, its individual and date those of its source row (train.parquet,
the catalogue, decisions.csv, read here independently); the .inp read back by the MARK parser
(export/capture_histories.parse_inp) and compared with histories rebuilt from occurrence.csv; the
tidy CSV read by pandas and rebuilt into the same histories; sightings.csv's photo counts.

Chapman's estimate between the last two seasons (2022, 2023) is set against the generator's
truth (test_truth_attributes.csv): the animals that can be photographed in those seasons as
identifiable, i.e. the individuals with an id in train.csv plus the test's new ones (the train
photos labelled new_whale show animals the generator never shows again: each is an animal of its
own, counted apart), and beside it the estimate with the true identities (what perfect matching
would give, the method's own error on this population).

    PYTHONPATH=src .venv/bin/python -m bench.bench_export RUN_DIR --work /tmp/export-bench [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

from bench.common import environment, markdown_table
from flukeline.cli import main as flukeline
from flukeline.core.metrics import NEW_WHALE
from flukeline.export.abundance import chapman
from flukeline.export.capture_histories import histories_from_tidy, read_inp
from flukeline.export.darwin_core import TERMS, darwin_core_problems
from flukeline.export.occasions import season_label
from flukeline.export.sightings import CONFIRMED

FIRST, SECOND = "2022", "2023"


def _demo_root(run: Path) -> Path:
    found = sorted(run.glob("resources/demo/*/test_truth_attributes.csv"))
    if len(found) != 1:
        raise SystemExit(f"{run}: expected one resources/demo/*/test_truth_attributes.csv, found {found}")
    return found[0].parent


def _linked_copy(run: Path, work: Path) -> Path:
    copy = work / "run"
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(run / "results"), str(run / "resources"), str(copy)], check=True)
    return copy


def _export(run: Path, out: Path, catalogue: Path | None = None) -> dict:
    demo = _demo_root(run)
    args = [
        "export",
        "--train",
        str(run / "results/data/train.parquet"),
        "--test",
        str(run / "results/data/test.parquet"),
    ]
    args += ["--decisions", str(run / "results/decisions.csv"), "--train-csv", str(demo / "kaggle/train.csv")]
    args += ["--out", str(out)] + (["--catalogue", str(catalogue)] if catalogue else [])
    started = time.perf_counter()
    if flukeline(args) != 0:
        raise SystemExit(f"flukeline {' '.join(args)} failed")
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = time.perf_counter() - started
    return summary


def _truth(run: Path) -> dict:
    attributes = pd.read_csv(_demo_root(run) / "test_truth_attributes.csv", dtype={"Id": str})
    train, test = attributes[attributes["split"] == "train"], attributes[attributes["split"] == "test"]
    known = set(train.loc[train["Id"] != NEW_WHALE, "individual"])
    return {
        "identifiable_population": len(known | set(test["individual"])),
        "known_individuals": len(known),
        "test_new_individuals": len(set(test.loc[test["Id"] == NEW_WHALE, "individual"])),
        "train_new_whale_animals": len(set(train.loc[train["Id"] == NEW_WHALE, "individual"])),
        "all_animals_drawn": attributes["individual"].nunique(),
        "individual_of": dict(zip(attributes["Image"], attributes["individual"])),
    }


def _true_identity_chapman(run: Path, truth: dict) -> dict:
    """Chapman between the two seasons with every identifiable photo's true animal."""
    train = pd.read_parquet(run / "results/data/train.parquet")
    test = pd.read_parquet(run / "results/data/test.parquet")
    train = train[train["original_id"] != NEW_WHALE]
    seen = {
        season: {truth["individual_of"][image] for image, day in rows if day[:4] == season}
        for season, rows in ((FIRST, zip(train["image"], train["date"])), (SECOND, zip(test["image"], test["date"])))
    }
    return chapman(len(seen[FIRST]), len(seen[SECOND]), len(seen[FIRST] & seen[SECOND])).to_dict()


def _source_rows(run: Path, catalogue: Path | None) -> pd.DataFrame:
    """Every photo's individual and date as its source row gives them (read independently of
    the export): the catalogue's rows, else decisions.csv's, else train.parquet's."""
    train = pd.read_parquet(run / "results/data/train.parquet")
    rows = {
        image: (identity if identity != NEW_WHALE else "", day)
        for image, identity, day in zip(train["image"], train["original_id"], train["date"].fillna(""))
    }
    decisions = pd.read_csv(run / "results/decisions.csv", dtype=str, keep_default_na=False)
    for row in decisions.itertuples(index=False):
        # A pending photo has no individual; an automatic new one its provisional id (its group,
        # else new:<encounter>, else new:<photo>).
        provisional = row.new_group or (f"new:{row.encounter}" if row.encounter else f"new:{row.Image}")
        identity = row.Id if row.decision == "match" else provisional if row.decision == "new" else ""
        rows[row.Image] = (identity, row.date)
    if catalogue is not None:
        for row in pd.read_csv(catalogue, dtype=str, keep_default_na=False).itertuples(index=False):
            rows[row.Image] = (row.Id, row.date)
    return pd.DataFrame([(image, *values) for image, values in rows.items()], columns=["image", "id", "date"])


def _validate(run: Path, out: Path, summary: dict, catalogue: Path | None) -> dict:
    occurrences = pd.read_csv(out / "occurrence.csv", dtype=str, keep_default_na=False)
    problems, notes = darwin_core_problems(occurrences)
    sources = _source_rows(run, catalogue).set_index("image")
    photos = set(sources.index)
    listed = occurrences["catalogNumber"]
    per_photo = occurrences.set_index("catalogNumber")
    named = per_photo.index[per_photo.index.isin(sources.index)]
    expected = sources.loc[named]
    ids_intact = bool((per_photo.loc[named, "organismID"] == expected["id"]).all())
    dates_intact = bool((per_photo.loc[named, "eventDate"] == expected["date"]).all())

    # The histories rebuilt from occurrence.csv (decided rows, season of eventDate) ...
    decided = occurrences[occurrences["identificationVerificationStatus"].isin(CONFIRMED)]
    seasons = decided["eventDate"].map(lambda d: season_label(date.fromisoformat(d[:10]), 1))
    occasion_labels = [o["label"] for o in summary["occasions"]]
    rebuilt = {
        individual: "".join("1" if label in set(group) else "0" for label in occasion_labels)
        for individual, group in seasons.groupby(decided["organismID"])
    }
    # ... against MARK's reading of the .inp and pandas' of the tidy CSV.
    records = read_inp(out / "capture_histories.inp")
    from_inp = {record.comment: record.history for record in records}
    tidy = pd.read_csv(out / "capture_histories.csv", dtype=str, keep_default_na=False)
    from_tidy_histories = histories_from_tidy(tidy, occasion_labels)
    from_tidy = {i: from_tidy_histories.history(n) for n, i in enumerate(from_tidy_histories.individuals)}
    sightings = pd.read_csv(out / "sightings.csv", dtype={"individual": str}, keep_default_na=False)
    return {
        "darwin_core_columns": list(occurrences.columns) == TERMS,
        "darwin_core_problems": len(problems),
        "darwin_core_notes": notes,
        "occurrences": len(occurrences),
        "photos_in_run": len(photos),
        "every_photo_once": bool(listed.is_unique and set(listed) == photos),
        "ids_intact": ids_intact,
        "dates_intact": dates_intact,
        "inp_records": len(records),
        "inp_frequencies_all_1": all(record.frequencies == (1,) for record in records),
        "inp_equals_occurrences": from_inp == rebuilt,
        "tidy_equals_inp": from_tidy == from_inp,
        "tidy_photos_equal_decided_occurrences": int(tidy["photos"].astype(int).sum()) == len(decided),
        "sightings_photos_equal_decided_occurrences": int(sightings["photos"].sum()) == len(decided),
        "sightings_individuals_equal_inp": sorted(sightings["individual"]) == sorted(from_inp),
    }


def _review_with_truth(run: Path, truth: dict, path: Path) -> dict:
    """A reviewer's export (Image, decision, Id) deciding every pending photo with the truth."""
    decisions = pd.read_csv(run / "results/decisions.csv", dtype=str, keep_default_na=False)
    answer = pd.read_csv(_demo_root(run) / "test_truth.csv", dtype=str).set_index("Image")["Id"]
    pending = decisions[decisions["decision"] == "review"]
    rows = []
    for image in pending["Image"]:
        if answer[image] == NEW_WHALE:
            rows.append((image, "new", f"new_{truth['individual_of'][image]:04d}"))
        else:
            rows.append((image, "match", answer[image]))
    pd.DataFrame(rows, columns=["Image", "decision", "Id"]).to_csv(path, index=False)
    return {
        "reviewed": len(rows),
        "matches": sum(r[1] == "match" for r in rows),
        "new": sum(r[1] == "new" for r in rows),
        "candidate_was_right": int((pending["candidate"].to_numpy() == answer[pending["Image"]].to_numpy()).sum()),
    }


def _estimate_rows(label: str, summary: dict, truth: int) -> list[list]:
    rows = []
    for name, estimate in summary["abundance"]["estimates"].items():
        low, high = estimate["interval"]
        rows.append(
            [label, name, estimate["n1"], estimate["n2"], estimate["m2"], round(estimate["estimate"], 1),
             f"{low:.0f}-{high:.0f}", "yes" if low <= truth <= high else "no"]
        )  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_export", description=__doc__)
    parser.add_argument("run", type=Path, help="a finished demo run with the field records (read only)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (hard-linked copy, exports)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="export_demo", help="<out>/<name>.md and .json")
    args = parser.parse_args(argv)
    run = _linked_copy(args.run.resolve(), args.work.resolve())
    truth = _truth(run)
    population = truth["identifiable_population"]

    before = _export(run, args.work / "export_before")
    checks_before = _validate(run, args.work / "export_before", before, None)
    export = args.work / "review_export.csv"
    review = _review_with_truth(run, truth, export)
    catalogue_dir = args.work / "catalogue"
    shutil.rmtree(catalogue_dir, ignore_errors=True)
    common = ["--test", str(run / "results/data/test.parquet"), "--train", str(run / "results/data/train.parquet")]
    if flukeline(["accept", "--decisions", str(export), *common, "--catalogue", str(catalogue_dir)]) != 0:
        raise SystemExit("flukeline accept failed")
    version = catalogue_dir / "catalogue-0001.csv"
    after = _export(run, args.work / "export_after", catalogue_dir)
    checks_after = _validate(run, args.work / "export_after", after, version)
    perfect = _true_identity_chapman(run, truth)

    rows = _estimate_rows("as decided (review pending)", before, population)
    rows += _estimate_rows("after one accept cycle", after, population)
    low, high = perfect["interval"]
    rows.append(["true identities", "-", perfect["n1"], perfect["n2"], perfect["m2"], round(perfect["estimate"], 1),
                 f"{low:.0f}-{high:.0f}", "yes" if low <= population <= high else "no"])  # fmt: skip
    check_rows = [[name, checks_before[name], checks_after[name]] for name in checks_before]
    command = " ".join(map(shlex.quote, ["python", "-m", "bench.bench_export", *sys.argv[1:]]))
    truth_note = (
        f"Truth (the generator): {population} animals can be photographed in {FIRST} or {SECOND} as identifiable"
        f" ({truth['known_individuals']} with an id in train.csv, {truth['test_new_individuals']} new in the test"
        f" batch); the {truth['train_new_whale_animals']} train photos labelled new_whale are each an animal the"
        f" generator never shows again ({truth['all_animals_drawn']} animals drawn in all)."
    )
    text = (
        f"`{command}` on {args.run} ({time.strftime('%Y-%m-%d')})\n\n{truth_note}\n\n"
        f"Chapman between seasons {FIRST} and {SECOND} (95% interval: Chao's log-normal):\n\n"
        + markdown_table(
            ["export", "pending photos as", "n1", "n2", "m2", "N", "95% interval", "covers truth"], rows, right_from=2
        )  # fmt: skip
        + f"\nOne accept cycle: {review['reviewed']} pending photos reviewed with the truth ({review['matches']}"
        f" matches, {review['new']} new; the best candidate was right for {review['candidate_was_right']}),"
        f" accepted into {version.name}.\n\nChecks of the files (read back by pandas and the MARK parser):\n\n"
        + markdown_table(["check", "as decided", "after accept"], check_rows)
    )
    result = {
        "environment": environment(),
        "command": command,
        "truth": {k: v for k, v in truth.items() if k != "individual_of"},
        "review": review,
        "before": {"abundance": before["abundance"], "sightings": before["sightings"], "checks": checks_before,
                   "seconds": before["seconds"]},
        "after": {"abundance": after["abundance"], "sightings": after["sightings"], "checks": checks_after,
                  "seconds": after["seconds"]},
        "true_identities": perfect,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
