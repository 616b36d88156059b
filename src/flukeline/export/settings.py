"""The export.* settings (`flukeline export`, the `export` rule): the taxon and record terms of
the Darwin Core file, how sightings become capture occasions, and what an undated photo does.
Standard library only: the Snakefile imports it at parse time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flukeline.core.errors import InputError
from flukeline.core.settings import StageSettings

OCCASIONS = ("day", "month", "season", "encounter")
UNDATED = ("refuse", "leave_out")
# GBIF's basisOfRecord vocabulary (rs.gbif.org/vocabulary/dwc/basis_of_record) for occurrence records.
BASIS_OF_RECORD = (
    "HumanObservation",
    "MachineObservation",
    "MaterialSample",
    "PreservedSpecimen",
    "LivingSpecimen",
    "FossilSpecimen",
    "MaterialCitation",
    "Occurrence",
)


@dataclass(frozen=True, kw_only=True)
class ExportSettings(StageSettings):
    section: ClassVar[str] = "export"

    # The species photographed: the demo's default is the humpback whale; set both for yours
    # (scientific_name_id: its WoRMS LSID, which OBIS requires; GBIF reads the name).
    scientific_name: str = "Megaptera novaeangliae"
    scientific_name_id: str = "urn:lsid:marinespecies.org:taxname:137092"
    kingdom: str = "Animalia"  # GBIF strongly recommends kingdom and taxonRank beside the name
    taxon_rank: str = "species"
    basis_of_record: str = "HumanObservation"  # a person took the photo (GBIF's vocabulary)
    # occurrenceID = this + the photo's name; GBIF wants it globally unique and persistent, so give
    # your own namespace (e.g. "urn:catalog:MyInstitute:humpbacks:").
    occurrence_id_prefix: str = "flukeline:"
    identified_by: str = ""  # identifiedBy of the reviewed photos (who reviews); empty: left blank
    # associatedMedia: this URL + the photo's name where the photos are published; null: the local path.
    media_base_url: str | None = None
    # Capture occasion of a sighting: its day, month, season (a year starting in season_start_month:
    # 1 = calendar years; 7 = July-June, labelled 2023/2024) or its encounter's date.
    occasion: str = "season"
    season_start_month: int = 1
    # The two occasions of the abundance estimate (their labels); empty: the last two.
    abundance_occasions: tuple = ()
    # A photo without a date: refuse (every one named with its file and line: GBIF and OBIS require
    # eventDate, and occasions need it) or leave_out (out of the Darwin Core file and the capture
    # histories, listed in summary.json; still a sighting of its individual).
    undated: str = "refuse"

    def __post_init__(self):
        problems = []
        if self.occasion not in OCCASIONS:
            problems.append(f"occasion {self.occasion!r} is none of {', '.join(OCCASIONS)}")
        if self.undated not in UNDATED:
            problems.append(f"undated {self.undated!r} is none of {', '.join(UNDATED)}")
        if self.basis_of_record not in BASIS_OF_RECORD:
            problems.append(f"basis_of_record {self.basis_of_record!r} is none of {', '.join(BASIS_OF_RECORD)}")
        if not 1 <= self.season_start_month <= 12:
            problems.append(f"season_start_month {self.season_start_month!r} is no month (1-12)")
        if len(self.abundance_occasions) not in (0, 2):
            problems.append(f"abundance_occasions {list(self.abundance_occasions)!r}: give two occasions, or none")
        if not self.scientific_name.strip():
            problems.append("scientific_name is empty (Darwin Core requires it)")
        if problems:
            raise InputError("export: " + "; ".join(problems))
