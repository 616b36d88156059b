"""The metrics table for Snakemake's HTML report (the `metrics_table` rule, results/metrics.html,
"5 match"): one row per member and ensemble of every round with CV MAP@5 and top-1, the
every-photo-a-new-individual baseline on the same images, the calibrated threshold from its
summary.json and, where the test identities are known, test MAP@5; the baselines beneath; then
the new individuals: the share estimated among the test photos (with its interval, the
validation share and, where known, the true one) and each method's open-set scores (AUROC new vs
known, BAKS, BAUS, new-individual precision and recall; evaluate/open_set.py). Sections that later
stages write as HTML fragments (--section: the export's discovery curve and abundance) follow as
they are, so this module needs nothing of theirs.

The page is read by people working on any species, so it says "new individual" where the data
and the Kaggle lists say `new_whale` (the label itself stays in submission.csv and metrics.json)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_bytes_atomic


def _read_json(path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read {what} ({error})") from error


def metrics_rows(metrics: dict, summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per scored method ("<member>@round<r>" or "ensemble@round<r>") of metrics.json,
    ordered by round, members before the ensemble. summaries: {method: its match summary.json}."""
    methods = metrics["cv"]["methods"]
    test = metrics.get("test", {}).get("methods")
    rows = []
    for name, cv in methods.items():
        if name not in summaries:
            raise InputError(
                f"metrics.json scores {name!r}, but no match summary was given for it (--summary {name} PATH)"
            )
        member, _, round_ = name.rpartition("@round")
        if not member or not round_.isdigit():
            raise InputError(f"metrics.json: method name {name!r} is not <member>@round<N>")
        row = {
            "round": int(round_),
            "method": member,
            "CV MAP@5": cv["map5"],
            "CV top-1": cv["top1"],
            "CV known top-1": cv.get("known_top1"),
            "all-new-individual CV MAP@5 (same images)": cv["all_new_whale_same_folds"]["map5"],
            "CV images": cv["n"],
            "new-individual threshold": summaries[name]["threshold"],
        }
        if test is not None:
            row["test MAP@5"] = test[name]["map5"]
        rows.append(row)
    for name in summaries:
        if name not in methods:
            raise InputError(f"a match summary was given for {name!r}, which metrics.json does not score")
    table = pd.DataFrame(rows)
    order = table["method"].eq("ensemble").astype(int)
    return (
        table.assign(_ensemble=order)
        .sort_values(["round", "_ensemble", "method"])
        .drop(columns="_ensemble")
        .reset_index(drop=True)
    )


def baseline_rows(metrics: dict) -> pd.DataFrame:
    """The references without training (every photo a new individual, raw-pixel 1-NN, zero-shot
    1-NN), one row each."""
    test = metrics.get("test", {})
    rows = [
        {
            "reference": "every photo a new individual",
            "CV MAP@5": metrics["cv"]["all_new_whale"]["map5"],
            "CV known top-1": metrics["cv"]["all_new_whale"].get("known_top1"),
            **({"test MAP@5": test["all_new_whale"]["map5"]} if test else {}),
        }
    ]
    for name, cv in metrics["cv"].get("baselines", {}).items():
        row = {"reference": name, "CV MAP@5": cv["map5"], "CV known top-1": cv.get("known_top1")}
        if test:
            row["test MAP@5"] = test["baselines"][name]["map5"]
        rows.append(row)
    return pd.DataFrame(rows)


OPEN_SET_COLUMNS = {
    "auroc_new": "AUROC new vs known",
    "baks": "BAKS",
    "baus": "BAUS",
    "new_whale_precision": "new precision",
    "new_whale_recall": "new recall",
    "new_share_predicted": "share called new",
}


def open_set_rows(metrics: dict) -> tuple[pd.DataFrame, str]:
    """One row per method with its open-set scores, on the test photos where their identities are
    known, else on validation; and which of the two it is."""
    split = "test" if "test" in metrics else "cv"
    rows = []
    for name, entry in metrics[split]["methods"].items():
        scores = {**entry, **entry.get("open_set", {})}
        rows.append({"method": name, **{label: scores.get(key) for key, label in OPEN_SET_COLUMNS.items()}})
    return pd.DataFrame(rows), ("test photos" if split == "test" else "validation photos")


def new_share_note(metrics: dict) -> str | None:
    """The share of new individuals in words: estimated, its interval, validation's, the one the
    threshold was chosen for and, where known, the truth."""
    share = metrics.get("new_share")
    if not share:
        return None
    low, high = share["interval"]
    level = f"{share['interval_level']:.0%} " if share.get("interval_level") else ""
    text = (
        f"Share of new individuals among the test photos: estimated {share['estimated']:.3f} ({level}interval"
        f" {low:.3f}-{high:.3f}) from their own scores; validation {share['validation']:.3f}; the threshold"
        f" and decision cuts were chosen for {share['used']:.3f} (match.new_share: {share['setting']})."
    )
    if "true" in share:
        text += f" True share: {share['true']:.3f} (estimate off by {share['error']:+.3f})."
    return text


def metrics_html(metrics: dict, summaries: dict[str, dict], sections: list[str] = ()) -> str:
    """A small self-contained HTML page: any warning first (in red), the metrics table, and the
    references without training beneath it; then `sections`, HTML fragments of later stages (the
    export's discovery curve and abundance), as they are."""
    table = metrics_rows(metrics, summaries)
    baseline = metrics["cv"]["all_new_whale"]
    notes = [
        f"CV: validation folds {', '.join(map(str, metrics['cv']['folds']))} of train; a member or ensemble is "
        f"scored on the folds it was validated on. Every photo called a new individual: CV MAP@5 "
        f"{baseline['map5']:.4f} on every fold ({baseline['n']} images). New-individual threshold: a photo whose "
        "best candidate scores below it is called a new individual (new_whale in submission.csv); the score is the "
        "similarity or (the default) its lift: the similarity minus the mean of the photo's next identities."
    ]
    if "test" in metrics:
        notes.append(
            f"Test (demo identities): submission MAP@5 {metrics['test']['submission']['map5']:.4f},"
            f" every photo a new individual {metrics['test']['all_new_whale']['map5']:.4f}."
        )

    def as_html(frame):
        return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="metrics", na_rep="-")

    warnings = "".join(f'<p class="warning">Warning: {html.escape(w)}</p>\n' for w in metrics.get("warnings", []))
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    open_set, where = open_set_rows(metrics)
    share = new_share_note(metrics)
    share_html = f"<p>{html.escape(share)}</p>\n" if share else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Flukeline metrics</title><style>'
        "body{font-family:sans-serif;font-size:14px}table.metrics{border-collapse:collapse}"
        "table.metrics th,table.metrics td{padding:3px 10px;border-bottom:1px solid #ccc;text-align:right}"
        ".warning{color:#a00;font-weight:bold;border:2px solid #a00;padding:6px}"
        "</style></head><body>\n"
        + warnings
        + "<h3>MAP@5 per member and ensemble</h3>\n"
        + as_html(table)
        + "\n"
        + notes_html
        + "\n<h3>References without training (same validation images)</h3>\n"
        + as_html(baseline_rows(metrics))
        + f"\n<h3>New individuals (open set, {where})</h3>\n"
        + share_html
        + as_html(open_set)
        + "\n<p>AUROC: new against known photos ranked by the best similarity (threshold-free); BAKS / BAUS:"
        " top-1 accuracy per individual averaged over the known / the new individuals (wildlife-datasets);"
        " precision and recall of the first guess new individual.</p>\n" + "".join(sections) + "\n</body></html>\n"
    )


def run_metrics_table(metrics_path, summaries: list[tuple[str, str]], out_path, sections=()) -> pd.DataFrame:
    metrics = _read_json(metrics_path, "the metrics")
    fragments = []
    for path in sections or ():
        try:
            fragments.append(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise InputError(f"{path}: cannot read the section ({error})") from error
    loaded = {}
    for name, path in summaries:
        summary = _read_json(path, f"the match summary of {name}")
        if "threshold" not in summary:
            raise InputError(f"{path}: no 'threshold' key (the match stage's summary.json has one)")
        loaded[name] = summary
    page = metrics_html(metrics, loaded, fragments)
    write_bytes_atomic(out_path, page.encode("utf-8"))
    return metrics_rows(metrics, loaded)
