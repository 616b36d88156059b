"""The sightings as a Darwin Core occurrence table (one occurrence per photo), and the checks
GBIF's and OBIS's validators make of such a table.

Terms (Darwin Core, dwc.tdwg.org/terms): GBIF requires occurrenceID, basisOfRecord,
scientificName and eventDate and strongly recommends kingdom, taxonRank, decimalLatitude /
decimalLongitude with geodeticDatum and individualCount (gbif.org's "Data quality requirements:
occurrence datasets"); OBIS requires occurrenceID, eventDate, decimalLatitude, decimalLongitude,
scientificName, scientificNameID, occurrenceStatus and basisOfRecord (the OBIS manual's term
checklist). Coordinates are written only where the photo has them (an OBIS upload needs every
row to), with geodeticDatum EPSG:4326 (WGS84, what GPS records).

The individual: organismID; eventID its encounter (photos of one animal on one day, so several
photos of one encounter are several occurrences of one event); catalogNumber the photo's name;
associatedMedia the photo (export.media_base_url + name, or its local path).
identificationVerificationStatus says how the individual's identity is known (the sightings'
status: reviewed, auto-accepted, provisional, unidentified) and identificationRemarks how (the
decide rule's probabilities, a pending photo's best candidate); identifiedBy is export.identified_by
for the reviewed photos."""

from __future__ import annotations

import math
import re
from datetime import date

import pandas as pd

from flukeline.data.metadata import DATE, LATITUDE, LOCATION, LONGITUDE
from flukeline.export.settings import BASIS_OF_RECORD, ExportSettings
from flukeline.export.sightings import AUTO, PROVISIONAL, REVIEWED, UNIDENTIFIED

TERMS = [
    "occurrenceID",
    "catalogNumber",
    "basisOfRecord",
    "occurrenceStatus",
    "eventID",
    "eventDate",
    "locality",
    "decimalLatitude",
    "decimalLongitude",
    "geodeticDatum",
    "scientificName",
    "scientificNameID",
    "kingdom",
    "taxonRank",
    "organismID",
    "individualCount",
    "associatedMedia",
    "identificationVerificationStatus",
    "identifiedBy",
    "identificationRemarks",
]
GBIF_REQUIRED = ("occurrenceID", "basisOfRecord", "scientificName", "eventDate")
OBIS_REQUIRED = (
    "occurrenceID",
    "eventDate",
    "decimalLatitude",
    "decimalLongitude",
    "scientificName",
    "scientificNameID",
    "occurrenceStatus",
    "basisOfRecord",
)
STATUSES = (REVIEWED, AUTO, PROVISIONAL, UNIDENTIFIED)
DATUM = "EPSG:4326"
# ISO 8601 as Darwin Core's eventDate takes it: a year, month, day or date-time, or an interval a/b.
_ISO_DATE = r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?"
ISO_8601 = re.compile(rf"^{_ISO_DATE}(/{_ISO_DATE})?$")


def _p(value: float) -> str:
    return "unknown" if value is None or math.isnan(value) else f"{value:.3f}"


def _remarks(row) -> str:
    if row.status == PROVISIONAL:
        candidate = f"best candidate {row.candidate} (P right {_p(row.p_correct)})" if row.candidate else "no candidate"
        return f"pending review: {candidate}; P(new individual) {_p(row.p_new)}"
    if row.status == AUTO:
        if row.new_individual:
            return f"new individual decided automatically (P new {_p(row.p_new)}); provisional id until accepted"
        return f"matched automatically (P right {_p(row.p_correct)})"
    if row.status == UNIDENTIFIED:
        return f"individual not identified ({row.source})"
    return f"identified by a person ({row.source})"


def _number(value: float) -> str:
    """Decimal degrees as text, at most 6 decimals (~0.1 m), no trailing zeros."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def occurrence_table(sightings: pd.DataFrame, settings: ExportSettings) -> pd.DataFrame:
    """One Darwin Core occurrence per sighting, columns TERMS, every cell text."""
    has_place = sightings[LATITUDE].notna() & sightings[LONGITUDE].notna()
    media = (
        sightings["image"].map(lambda name: settings.media_base_url + name)
        if settings.media_base_url
        else sightings["path"]
    )
    table = pd.DataFrame(
        {
            "occurrenceID": settings.occurrence_id_prefix + sightings["image"],
            "catalogNumber": sightings["image"],
            "basisOfRecord": settings.basis_of_record,
            "occurrenceStatus": "present",
            "eventID": sightings["encounter"],
            "eventDate": sightings[DATE],
            "locality": sightings[LOCATION].fillna(""),
            "decimalLatitude": sightings[LATITUDE].map(_number),
            "decimalLongitude": sightings[LONGITUDE].map(_number),
            "geodeticDatum": has_place.map({True: DATUM, False: ""}),
            "scientificName": settings.scientific_name,
            "scientificNameID": settings.scientific_name_id,
            "kingdom": settings.kingdom,
            "taxonRank": settings.taxon_rank,
            "organismID": sightings["individual"],
            "individualCount": "1",
            "associatedMedia": media,
            "identificationVerificationStatus": sightings["status"],
            "identifiedBy": (sightings["status"] == REVIEWED).map({True: settings.identified_by, False: ""}),
            "identificationRemarks": [_remarks(row) for row in sightings.itertuples(index=False)],
        },
        index=sightings.index,
    )
    return table[TERMS].reset_index(drop=True)


def is_iso_8601(value: str) -> bool:
    """An ISO 8601 date, date-time or interval of them that names a real day (no 2023-13, 2023-02-30)."""
    if not ISO_8601.match(value):
        return False
    for part in value.split("/"):
        year, month, day = (part[:10].split("-") + ["01", "01"])[:3]
        try:
            date(int(year), int(month), int(day))
        except ValueError:
            return False
    return True


def darwin_core_problems(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(problems GBIF's or OBIS's validator would reject, notes on what OBIS still needs), for an
    occurrence table read with every cell as text ("" = empty); rows named by their CSV line."""
    problems = [f"missing column {term}" for term in dict.fromkeys(GBIF_REQUIRED + OBIS_REQUIRED) if term not in table]
    if problems:
        return problems, []

    def line(index) -> str:
        return f"line {index + 2}"

    for term in GBIF_REQUIRED + ("occurrenceStatus",):
        for index in table.index[table[term].str.strip() == ""]:
            problems.append(f"{line(index)}: {term} is empty")
    for index in table.index[table["occurrenceID"].duplicated(keep="first") & (table["occurrenceID"] != "")]:
        problems.append(f"{line(index)}: occurrenceID {table.at[index, 'occurrenceID']!r} is not unique")
    for column, allowed in (
        ("basisOfRecord", BASIS_OF_RECORD),
        ("occurrenceStatus", ("present", "absent")),
        ("identificationVerificationStatus", STATUSES),
    ):
        if column in table:
            for index in table.index[~table[column].isin(allowed)]:
                problems.append(f"{line(index)}: {column} {table.at[index, column]!r} is none of {', '.join(allowed)}")
    for index in table.index[(table["eventDate"] != "") & ~table["eventDate"].map(is_iso_8601)]:
        problems.append(f"{line(index)}: eventDate {table.at[index, 'eventDate']!r} is not ISO 8601")
    problems += _coordinate_problems(table, line)
    if "individualCount" in table:
        bad = ~table["individualCount"].str.fullmatch(r"[1-9]\d*") & (table["individualCount"] != "")
        problems += [
            f"{line(i)}: individualCount {table.at[i, 'individualCount']!r} is no positive integer"
            for i in table.index[bad]
        ]
    without = int(((table["decimalLatitude"] == "") | (table["decimalLongitude"] == "")).sum())
    notes = (
        [f"{without} occurrence(s) without coordinates: OBIS requires decimalLatitude/decimalLongitude"]
        if without
        else []
    )
    unnamed = int((table["scientificNameID"].str.strip() == "").sum())
    if unnamed:
        notes.append(f"{unnamed} occurrence(s) without scientificNameID: OBIS requires one (export.scientific_name_id)")
    return problems, notes


def _coordinate_problems(table: pd.DataFrame, line) -> list[str]:
    problems = []
    for column, limit in (("decimalLatitude", 90.0), ("decimalLongitude", 180.0)):
        values = pd.to_numeric(table[column].where(table[column] != ""), errors="coerce")
        not_number = values.isna() & (table[column] != "")
        out_of_range = values.abs() > limit
        problems += [f"{line(i)}: {column} {table.at[i, column]!r} is not a number" for i in table.index[not_number]]
        problems += [
            f"{line(i)}: {column} {table.at[i, column]!r} outside [-{limit:g}, {limit:g}]"
            for i in table.index[out_of_range]
        ]
    half = (table["decimalLatitude"] == "") != (table["decimalLongitude"] == "")
    problems += [f"{line(i)}: only one of decimalLatitude / decimalLongitude" for i in table.index[half]]
    if "geodeticDatum" in table:
        no_datum = (table["decimalLatitude"] != "") & (table["geodeticDatum"] == "")
        problems += [f"{line(i)}: coordinates without geodeticDatum" for i in table.index[no_datum]]
    return problems
