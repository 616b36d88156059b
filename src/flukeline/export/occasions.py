"""Dates and capture occasions of the sightings (export.occasion, export.undated).

An encounter is one animal on one day (flukeline.data.catalogue_rows), so a photo without a date
takes its encounter's when the encounter's dated photos agree on one day. A photo still without
one is refused (export.undated: refuse: GBIF and OBIS require eventDate, and an occasion needs a
date), each named with its file and line, or left out of the Darwin Core file and the capture
histories (leave_out).

An occasion is a period every dated sighting falls in: its day (2023-08-17), month (2023-08),
season (2023; with season_start_month 7, July 2023 to June 2024 is 2023/2024) or its encounter's
date (the day its encounter's photos share; photos of one encounter on different days are refused,
each named). Only periods with a sighting are occasions, in time order: the labels of one kind
sort as their periods do."""

from __future__ import annotations

from datetime import date

import pandas as pd

from flukeline.data.catalogue_rows import ENCOUNTER
from flukeline.data.metadata import DATE
from flukeline.export.settings import ExportSettings

# How many problems a refusal lists before it counts the rest.
SHOWN = 50


def day_of(value: str) -> str:
    """The day (YYYY-MM-DD) of an ISO 8601 date or date-time ("" stays "")."""
    return value[:10]


def fill_from_encounters(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The sightings with an undated photo given its encounter's day where the encounter's dated
    photos share one; and how many photos were given one."""
    dated = table[(table[DATE] != "") & (table[ENCOUNTER] != "")]
    days = dated.groupby(ENCOUNTER)[DATE].agg(lambda values: {day_of(v) for v in values})
    single = {encounter: next(iter(found)) for encounter, found in days.items() if len(found) == 1}
    missing = (table[DATE] == "") & table[ENCOUNTER].isin(single.keys())
    out = table.copy()
    out.loc[missing, DATE] = out.loc[missing, ENCOUNTER].map(single)
    return out, int(missing.sum())


def undated_problems(table: pd.DataFrame) -> list[str]:
    """One line per photo without a date, with its file and line (one line in all when no photo
    has a date: the run's CSVs have no date column)."""
    undated = table[table[DATE] == ""]
    if len(undated) and len(undated) == len(table):
        first = undated.iloc[0]
        return [
            f"none of the {len(table)} photos has a date (the first: {first['where']}, photo {first['image']!r}):"
            " Darwin Core's eventDate and the capture occasions need one; add a date column to train.csv and"
            " test.csv (or sample_submission.csv), or set export.undated: leave_out"
        ]
    return [
        f"{row.where}: photo {row.image!r} ({_who(row)}) has no date: Darwin Core's eventDate and the capture"
        " occasions need one (add it to that file, or set export.undated: leave_out)"
        for row in undated.itertuples(index=False)
    ]


def _who(row) -> str:
    return f"{row.status}, {row.individual}" if row.individual else row.status


def season_label(day: date, start_month: int) -> str:
    """The season a day falls in: its year, or "2023/2024" when seasons start in another month."""
    if start_month == 1:
        return str(day.year)
    first = day.year if day.month >= start_month else day.year - 1
    return f"{first}/{first + 1}"


def occasions(table: pd.DataFrame, settings: ExportSettings) -> tuple[pd.Series, list[str]]:
    """Each dated sighting's occasion label ("" for the undated) and the problems (occasion
    encounter: an encounter whose photos were taken on different days)."""
    days = table[DATE].map(day_of)
    problems: list[str] = []
    if settings.occasion == "day":
        return days, problems
    if settings.occasion == "month":
        return days.str[:7], problems
    if settings.occasion == "season":
        labels = [season_label(date.fromisoformat(d), settings.season_start_month) if d else "" for d in days]
        return pd.Series(labels, index=table.index, dtype="object"), problems
    # encounter: the day of the encounter's first dated photo, every other day a problem.
    labels = days.copy()
    first: dict[str, tuple[str, str]] = {}
    for index, row in table.iterrows():
        encounter, day = row[ENCOUNTER], days[index]
        if not encounter or not day:
            continue
        if encounter not in first:
            first[encounter] = (day, row["where"])
        elif first[encounter][0] != day:
            problems.append(
                f"{row['where']}: photo {row['image']!r} is dated {day}, but encounter {encounter!r} began on"
                f" {first[encounter][0]} ({first[encounter][1]}): export.occasion encounter needs one day per encounter"
            )
        labels[index] = first[encounter][0]
    return labels, problems


def listed(problems: list[str]) -> str:
    """The problems one a line, the first SHOWN and a count of the rest."""
    shown = problems[:SHOWN]
    rest = len(problems) - len(shown)
    return "\n".join(shown + ([f"... and {rest} more"] if rest else []))
