"""Snakemake's HTML report (`snakemake --report`) of the tiny run, with the two outputs made for it:
the data summary figure and the metrics table (their own tests, on synthetic tables, are in
tests/unit/test_report_outputs.py); and the export rule on a copy of the run (export.report: its
section in metrics.html, its figure in the report; tests/unit/test_export.py tests its numbers)."""

import base64
import json
import re
import shutil
import subprocess

import pandas as pd
import yaml
from conftest import REPO, TINY, snakemake
from small_run import merge

from flukeline.export.darwin_core import TERMS


def _report_variable(page: str, name: str):
    """A JSON variable of Snakemake's report page (`var results = {...};`)."""
    found = re.findall(rf"^\s*var {name} = (\{{.*\}});?\s*$", page, re.M)
    assert len(found) == 1, f"no single `var {name} = {{...}}` in the report"
    return json.loads(found[0])


def test_report_embeds_every_stage(tiny_run, tmp_path):
    workdir, _ = tiny_run
    config = merge(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(TINY.read_text()))
    members = config["embed"]["active_members"]
    rounds = range(config["match"]["pseudo_labels"]["rounds"] + 1)
    folds = config["embed"]["cv_folds"]
    assert config["data"]["source"] == "demo" and config["detect"]["method"] == "learned"

    report = tmp_path / "report.html"
    snakemake(workdir, "--report", str(report))
    page = report.read_text()
    categories = _report_variable(page, "categories")
    results = _report_variable(page, "results")

    curves = {f"results/embed/round{r}/{m}/fold{f}/curves.png" for r in rounds for m in members for f in folds}
    calibration = {f"results/match/round{r}/{m}/calibration.png" for r in rounds for m in [*members, "ensemble"]}
    # Snakemake's name for results without a subcategory.
    assert {cat: {sub: set(paths) for sub, paths in subs.items()} for cat, subs in categories.items()} == {
        "1 data": {"Other": {"results/data/demo_contact_sheet.png", "results/data/summary.png"}},
        "2 detect": {"Other": {"results/detect/overlays.png"}},
        "3 align": {"Other": {"results/align/contact_sheet.png"}},
        "4 embed": {"training curves": curves},
        "5 match": {
            "threshold calibration": calibration,
            "metrics": {"results/metrics.html"},
            "decisions": {"results/decisions/reliability.png"},
        },
    }
    # Every result is embedded whole (the report is one self-contained file) with its caption.
    for path, result in results.items():
        embedded = base64.b64decode(result["data_uri"].split("base64,", 1)[1])
        assert embedded == (workdir / path).read_bytes(), path
        assert result["caption"], path
    assert results["results/metrics.html"]["mime_type"] == "text/html"
    assert "ensemble" in (workdir / "results/metrics.html").read_text()
    assert "new_whale" in results["results/data/summary.png"]["caption"]
    member, round_, fold = members[0], rounds[-1], folds[0]
    assert results[f"results/embed/round{round_}/{member}/fold{fold}/curves.png"]["labels"] == {
        "member": member,
        "round": str(round_),
        "fold": str(fold),
    }
    assert results[f"results/match/round{round_}/ensemble/calibration.png"]["labels"] == {
        "method": "ensemble",
        "round": str(round_),
    }


def test_export_joins_the_default_target_metrics_and_report(tiny_run, tmp_path):
    """The export rule on a hard-linked copy of the tiny run, whose photos have no dates (refused
    by default: tests/unit/test_export.py): with export.undated leave_out and export.report, the
    default target builds it, metrics.html carries its section and the report its figure."""
    workdir, _ = tiny_run
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(["cp", "-al", str(workdir / "results"), str(workdir / "resources"), str(run)], check=True)
    shutil.copytree(workdir / ".snakemake", run / ".snakemake", symlinks=True)
    photos = len(pd.read_parquet(run / "results/data/train.parquet")) + len(
        pd.read_parquet(run / "results/data/test.parquet")
    )

    leave_out = _config(tmp_path, "leave_out", report=True, undated="leave_out")
    snakemake(run, "--cores", "2", configfiles=(TINY, leave_out))
    summary = json.loads((run / "results/export/summary.json").read_text())
    assert summary["sightings"]["photos"] == summary["sightings"]["undated_left_out"] == photos
    assert summary["abundance"]["estimates"] is None and summary["occasions"] == []
    occurrences = pd.read_csv(run / "results/export/occurrence.csv", dtype=str)
    assert list(occurrences.columns) == TERMS and occurrences.empty
    # Undated photos still count as sightings: one row per decided individual, the curve up to them.
    sightings = pd.read_csv(run / "results/export/sightings.csv", dtype={"individual": str})
    curve = pd.read_csv(run / "results/export/discovery.csv")
    assert curve.loc[curve["scenario"] == "decided", "individuals"].max() == len(sightings)
    assert "Sightings, discovery curve and abundance (export)" in (run / "results/metrics.html").read_text()

    report = tmp_path / "report.html"
    snakemake(run, "--report", str(report), configfiles=(TINY, leave_out))
    categories = _report_variable(report.read_text(), "categories")
    assert categories["6 export"] == {"Other": ["results/export/discovery.png"]}


def _config(folder, name: str, **export) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"export": export}))
    return path
