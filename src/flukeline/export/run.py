"""`flukeline export` (and the export rule): the project's sightings (export/sightings.py) as a
Darwin Core occurrence file, capture histories for MARK (.inp) and as a tidy CSV, one row per
individual, the discovery curve and a first abundance estimate, into one folder:

    occurrence.csv          Darwin Core occurrences, one per photo (export/darwin_core.py)
    capture_histories.inp   MARK encounter histories of the decided individuals over the occasions
    capture_histories.csv   the same as a tidy table (individual, occasion, site, photos)
    sightings.csv           per individual: first and last seen, photos, occasions, encounters, sites
    discovery.csv           the discovery curves (decided; pending all matches; pending all new)
    discovery.png           the curves against photos and date, and the resighting frequencies
    section.html            the part of results/metrics.html (metrics_table --section)
    summary.json            counts, occasions, abundance estimates, resighting, what was left out

Every problem (a photo without a date when export.undated is refuse, an encounter over several
days with occasion encounter, a malformed row of the catalogue or decisions.csv) is found before
anything is written and reported at once, each with its file and line."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import yaml

from flukeline.core.errors import InputError
from flukeline.core.io import write_atomic, write_csv_atomic, write_json_atomic
from flukeline.data.catalogue_rows import latest_catalogue
from flukeline.data.metadata import DATE
from flukeline.export.abundance import abundance
from flukeline.export.capture_histories import capture_histories, tidy_table, write_inp
from flukeline.export.darwin_core import TERMS, darwin_core_problems, occurrence_table
from flukeline.export.discovery import CURVES, discovery_curves, discovery_figure, resighting, sightings_table
from flukeline.export.occasions import fill_from_encounters, listed, occasions, undated_problems
from flukeline.export.report_section import section_html
from flukeline.export.settings import ExportSettings
from flukeline.export.sightings import CONFIRMED, PROVISIONAL, UNIDENTIFIED, read_sightings

log = logging.getLogger(__name__)

FILES = {
    "occurrence": "occurrence.csv",
    "inp": "capture_histories.inp",
    "histories": "capture_histories.csv",
    "sightings": "sightings.csv",
    "discovery": "discovery.csv",
    "figure": "discovery.png",
    "section": "section.html",
    "summary": "summary.json",
}


def export_settings(params: dict | None = None, config_path=None) -> ExportSettings:
    """The export section of a config file (its `report` key shapes the workflow only), with
    `params` over it."""
    section = {}
    if config_path:
        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        section = {k: v for k, v in (loaded.get("export") or {}).items() if k != "report"}
    return ExportSettings.from_dict({**section, **(params or {})})


def _catalogue_file(location) -> Path | None:
    """A catalogue version: the file given, or a folder's newest version."""
    if not location:
        return None
    path = Path(location)
    if not path.exists():
        raise InputError(f"--catalogue {path}: no such file or folder")
    found = latest_catalogue(path)
    if found is None:
        raise InputError(f"--catalogue {path}: the folder holds no catalogue-NNNN.csv version")
    return found


def run_export(
    train_path,
    test_path,
    decisions_path,
    out_dir,
    params: dict | None = None,
    catalogue_path=None,
    train_csv=None,
    config_path=None,
) -> dict:
    settings = export_settings(params, config_path)
    catalogue = _catalogue_file(catalogue_path)
    found = read_sightings(train_path, test_path, decisions_path, catalogue, train_csv)
    table, from_encounters = fill_from_encounters(found.table)
    problems = list(found.problems)
    undated = table[DATE] == ""
    if undated.any() and settings.undated == "refuse":
        problems += undated_problems(table)
    labels, occasion_problems = occasions(table, settings)
    problems += occasion_problems
    if problems:
        raise InputError(f"{len(problems)} problem(s), nothing exported:\n{listed(problems)}")
    table["occasion"] = labels

    dated = table[~undated]
    occasion_list = sorted(set(dated.loc[dated["status"] != UNIDENTIFIED, "occasion"]))
    confirmed = table[table["status"].isin(CONFIRMED)]
    histories = capture_histories(dated[dated["status"].isin(CONFIRMED)], occasion_list)
    occurrences = occurrence_table(dated, settings)
    dwc_problems, dwc_notes = darwin_core_problems(occurrences)
    if dwc_problems:
        raise InputError(f"the Darwin Core file would be refused ({len(dwc_problems)}):\n{listed(dwc_problems)}")
    estimate = abundance(dated, occasion_list, settings.abundance_occasions)
    curves = discovery_curves(table)
    resighted = resighting(confirmed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"Flukeline capture histories: {len(histories.individuals)} individuals (decided photos), "
        f"{len(occasion_list)} occasions ({settings.occasion}); one record per individual, frequency 1"
    )
    write_csv_atomic(occurrences, out / FILES["occurrence"])
    write_inp(out / FILES["inp"], histories, title)
    write_csv_atomic(tidy_table(dated[dated["status"].isin(CONFIRMED)], histories), out / FILES["histories"])
    write_csv_atomic(sightings_table(confirmed), out / FILES["sightings"])
    write_csv_atomic(curves, out / FILES["discovery"])
    discovery_figure(curves, resighted, out / FILES["figure"])
    summary = {
        "settings": settings.to_dict(),
        "inputs": {
            "train": str(train_path),
            "test": str(test_path),
            "decisions": str(decisions_path),
            "catalogue": str(catalogue) if catalogue else None,
            "train_csv": str(train_csv) if train_csv else None,
        },
        "sightings": {
            "photos": len(table),
            "by_status": {k: int(v) for k, v in table["status"].value_counts().sort_index().items()},
            "pending_photos": int((table["status"] == PROVISIONAL).sum()),
            "dates_from_encounter": from_encounters,
            "superseded_by_catalogue": found.superseded,
            "undated_left_out": int(undated.sum()),
            "undated_left_out_rows": [f"{r.where}: {r.image}" for r in table[undated].itertuples(index=False)][:50],
        },
        "occasions": _occasion_rows(dated, occasion_list),
        "capture_histories": {"individuals": len(histories.individuals), "occasions": len(occasion_list)},
        "abundance": estimate,
        "resighting": resighted,
        "discovery": {
            name: {
                "photos": int((curves["scenario"] == name).sum()),
                "individuals": int(curves.loc[curves["scenario"] == name, "individuals"].max() or 0),
            }
            for name in CURVES
        },
        "darwin_core": {"occurrences": len(occurrences), "terms": TERMS, "notes": dwc_notes},
        "files": {key: str(out / name) for key, name in FILES.items()},
    }
    write_atomic(out / FILES["section"], lambda tmp: tmp.write_text(section_html(summary, out / FILES["figure"])))
    write_json_atomic(summary, out / FILES["summary"])
    log.info(
        "exported %d occurrences, %d individuals over %d occasions to %s%s",
        len(occurrences),
        len(histories.individuals),
        len(occasion_list),
        out,
        _estimate_note(estimate),
    )
    return summary


def _estimate_note(estimate: dict) -> str:
    if not estimate.get("estimates"):
        return ""
    decided = estimate["estimates"]["decided"]
    low, high = decided["interval"]
    return (
        f"; Chapman N {decided['estimate']:.0f} (95% {low:.0f}-{high:.0f}) between {estimate['occasions'][0]} and"
        f" {estimate['occasions'][1]}, {estimate['range'][0]:.0f}-{estimate['range'][1]:.0f} as the pending photos go"
    )


def _occasion_rows(dated: pd.DataFrame, occasion_list: list[str]) -> list[dict]:
    rows = []
    for number, label in enumerate(occasion_list, start=1):
        photos = dated[dated["occasion"] == label]
        decided = photos[photos["status"].isin(CONFIRMED)]
        rows.append(
            {
                "occasion": number,
                "label": label,
                "first_date": min(photos[DATE]),
                "last_date": max(photos[DATE]),
                "photos": len(photos),
                "decided_individuals": int(decided["individual"].nunique()),
                "pending_photos": int((photos["status"] == PROVISIONAL).sum()),
            }
        )
    return rows
