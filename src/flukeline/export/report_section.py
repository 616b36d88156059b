"""The export's section of results/metrics.html (an HTML fragment the metrics_table rule appends
with --section): the sightings by status, the abundance estimates between the two occasions with
the range the pending review photos span, the resighting frequencies and the discovery figure
(embedded, so the page stays one self-contained file)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from flukeline.export.abundance import SCENARIOS


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="metrics", na_rep="-", float_format=lambda v: f"{v:.1f}")


def abundance_html(abundance: dict) -> str:
    first, second = (abundance["occasions"] + ["", ""])[:2]
    if not abundance.get("estimates"):
        return f"<p>No abundance estimate: {html.escape(abundance.get('reason', ''))}.</p>"
    rows = []
    for name, estimate in abundance["estimates"].items():
        low, high = estimate["interval"]
        rows.append(
            {
                "identities": SCENARIOS[name],
                "n1": estimate["n1"],
                "n2": estimate["n2"],
                "m2 (both)": estimate["m2"],
                "N (Chapman)": estimate["estimate"],
                "SE": estimate["se"],
                "95% interval": f"{low:.0f}-{high:.0f}",
            }
        )
    low, high = abundance["range"]
    return (
        f"<p>Chapman's bias-corrected Lincoln-Petersen estimate between occasions {html.escape(first)} and"
        f" {html.escape(second)} (n1, n2: individuals identified in each; m2: in both; interval: Chao's"
        " log-normal). It assumes a closed population between the two and equal chances of being photographed."
        f" The {abundance['pending_photos']} photos still to review move it between {low:.0f} (all matches) and"
        f" {high:.0f} (all new) — intervals included, {abundance['range_with_intervals'][0]:.0f}-"
        f"{abundance['range_with_intervals'][1]:.0f}.</p>\n" + _table(pd.DataFrame(rows))
    )


def section_html(summary: dict, figure: Path) -> str:
    counts = summary["sightings"]["by_status"]
    status = ", ".join(f"{count} {name}" for name, count in counts.items())
    resighting = summary["resighting"]
    frequencies = pd.DataFrame(
        {"occasions seen": list(resighting["by_occasions"]), "individuals": list(resighting["by_occasions"].values())}
    )
    uri = "data:image/png;base64," + base64.b64encode(Path(figure).read_bytes()).decode("ascii")
    occasions = summary["occasions"]
    described = (
        f"{len(occasions)} occasion(s) ({html.escape(summary['settings']['occasion'])}):"
        f" {html.escape(', '.join(o['label'] for o in occasions))}"
        if occasions
        else "no dated sightings, so no occasions"
    )
    left_out = summary["sightings"]["undated_left_out"]
    return (
        "<h3>Sightings, discovery curve and abundance (export)</h3>\n"
        f"<p>{summary['sightings']['photos']} photos: {html.escape(status)}; {resighting['individuals']} individuals"
        f" decided, {resighting['resighted_individuals']} of them seen in two occasions or more. {described}."
        + (f" {left_out} undated photo(s) left out of the Darwin Core file and the histories." if left_out else "")
        + "</p>\n"
        + abundance_html(summary["abundance"])
        + "\n<h4>Resighting frequency (decided individuals)</h4>\n"
        + _table(frequencies)
        + f'\n<p><img alt="discovery curve" style="max-width:100%" src="{uri}"></p>\n'
    )
