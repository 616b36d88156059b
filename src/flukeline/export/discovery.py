"""How complete the catalogue is: the discovery curve (individuals known against photos
processed, and against date), how often individuals are seen again, and one row per individual
(first and last seen, photos, occasions, sites).

The photos are taken in time order (undated ones after the dated, in the order of their
records), so the curve is what the catalogue looked like as the photos came in; a curve that
flattens means new photos mostly show known animals. It is drawn for the decided photos and for
the two extremes of the pending review photos (abundance.SCENARIOS), since the new individuals
hide among the photos still to review."""

from __future__ import annotations

import pandas as pd

from flukeline.core.figures import new_figure, save_figure
from flukeline.data.metadata import DATE, LOCATION
from flukeline.export.abundance import resolved
from flukeline.export.sightings import AUTO, REVIEWED

CURVES = {"decided": "decided photos", "all_matches": "pending all matches", "all_new": "pending all new"}
SIGHTING_COLUMNS = [
    "individual",
    "first_seen",
    "last_seen",
    "photos",
    "occasions",
    "encounters",
    "sites",
    "reviewed_photos",
    "auto_accepted_photos",
]


def in_time_order(sightings: pd.DataFrame) -> pd.DataFrame:
    """Dated photos by date, then the undated, each in the order of their records."""
    order = sightings.assign(_undated=sightings[DATE] == "", _record=range(len(sightings)))
    return order.sort_values(["_undated", DATE, "_record"], kind="stable").drop(columns=["_undated", "_record"])


def discovery_curve(sightings: pd.DataFrame) -> pd.DataFrame:
    """Per photo with an individual, in time order: photo (1-based), image, date, individual,
    individuals (known so far) and new (its individual first seen here)."""
    ordered = in_time_order(sightings[sightings["individual"] != ""])
    new = ~ordered["individual"].duplicated()
    return pd.DataFrame(
        {
            "photo": range(1, len(ordered) + 1),
            "image": ordered["image"].to_numpy(),
            "date": ordered[DATE].to_numpy(),
            "individual": ordered["individual"].to_numpy(),
            "individuals": new.cumsum().to_numpy(),
            "new": new.to_numpy(),
        }
    )


def discovery_curves(sightings: pd.DataFrame) -> pd.DataFrame:
    """discovery_curve of each scenario of CURVES, stacked with a `scenario` column."""
    parts = [discovery_curve(resolved(sightings, name)).assign(scenario=name) for name in CURVES]
    table = pd.concat(parts, ignore_index=True)
    return table[["scenario", *[c for c in table.columns if c != "scenario"]]]


def resighting(confirmed: pd.DataFrame) -> dict:
    """How many individuals were seen in 1, 2, ... occasions and on 1, 2, ... photos (decided
    sightings; the occasion counts over the dated ones)."""
    dated = confirmed[confirmed["occasion"] != ""]
    occasions = dated.groupby("individual")["occasion"].nunique().value_counts().sort_index()
    photos = confirmed.groupby("individual").size().value_counts().sort_index()
    individuals = confirmed["individual"].nunique()
    seen_again = int((dated.groupby("individual")["occasion"].nunique() >= 2).sum())
    return {
        "individuals": int(individuals),
        "by_occasions": {int(k): int(v) for k, v in occasions.items()},
        "by_photos": {int(k): int(v) for k, v in photos.items()},
        "resighted_individuals": seen_again,
        "resighted_share": seen_again / individuals if individuals else None,
    }


def sightings_table(confirmed: pd.DataFrame) -> pd.DataFrame:
    """One row per individual of the decided sightings."""
    rows = []
    for individual, group in confirmed.groupby("individual", sort=True):
        dates = sorted(d for d in group[DATE] if d)
        sites = sorted({s for s in group[LOCATION].fillna("") if s})
        rows.append(
            {
                "individual": individual,
                "first_seen": dates[0] if dates else "",
                "last_seen": dates[-1] if dates else "",
                "photos": len(group),
                "occasions": group.loc[group["occasion"] != "", "occasion"].nunique(),
                "encounters": group.loc[group["encounter"] != "", "encounter"].nunique(),
                "sites": ";".join(sites),
                "reviewed_photos": int((group["status"] == REVIEWED).sum()),
                "auto_accepted_photos": int((group["status"] == AUTO).sum()),
            }
        )
    return pd.DataFrame(rows, columns=SIGHTING_COLUMNS)


def discovery_figure(curves: pd.DataFrame, resighted: dict, path) -> None:
    """Individuals known against photos and against date (one line per scenario), and the
    individuals by occasions seen."""
    fig, axes = new_figure(1, 3, figsize=(15, 4.2))
    by_photo, by_date, histogram = axes
    # The extremes dashed under the decided curve, which they follow until the pending photos.
    styles = {"all_new": ("#c43", "--"), "all_matches": ("#37b", "--"), "decided": ("black", "-")}
    for name, (colour, line) in styles.items():
        curve, label = curves[curves["scenario"] == name], CURVES[name]
        by_photo.plot(curve["photo"], curve["individuals"], line, color=colour, label=label, lw=1.4)
        dated = curve[curve["date"] != ""]
        if len(dated):
            by_date.plot(pd.to_datetime(dated["date"]), dated["individuals"], line, color=colour, label=label, lw=1.4)
    by_photo.set(xlabel="photos processed (in time order)", ylabel="individuals known", title="Discovery curve")
    by_date.set(xlabel="date", ylabel="individuals known", title="Discovery curve by date")
    by_photo.legend(fontsize=8)
    if by_date.lines:
        by_date.legend(fontsize=8)
        by_date.tick_params(axis="x", labelrotation=30)
    else:
        by_date.text(0.5, 0.5, "no dated photos", ha="center", va="center", transform=by_date.transAxes)
    counts = resighted["by_occasions"]
    histogram.bar(list(counts), list(counts.values()), color="#4a7")
    histogram.set_xticks(list(counts))
    histogram.set(xlabel="occasions an individual was seen in", ylabel="individuals", title="Resighting frequency")
    fig.tight_layout()
    save_figure(fig, path)
