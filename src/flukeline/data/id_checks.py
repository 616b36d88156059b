"""The checks ingest applies to the Ids of train.csv: one word each (the submission separates ids
by spaces; a comma or a line break splits them where the CSV is written unquoted), and a warning
for Ids that differ only in case (likely one animal, kept apart as written)."""

from __future__ import annotations

import logging
from collections import defaultdict

logger = logging.getLogger("flukeline.data.ingest")  # the ingest log's own name: its messages read as ingest's

# Rows named in one warning before "... and N more".
MAX_NAMED_ROWS = 20


def id_problem(label: str) -> str | None:
    # Submissions list five ids separated by spaces, so an id must be one word; a comma is refused
    # too, since it splits the id wherever the CSV is written or read without quoting.
    label = label.strip()
    if not label:
        return "has an empty Id"
    if "," in label:
        return f"has an Id with a comma in it ({label!r})"
    if "\n" in label or "\r" in label:
        return f"has an Id with a line break in it ({label!r})"
    if any(character.isspace() for character in label):
        return f"has an Id with a space in it ({label!r}); the submission separates ids by spaces"
    return None


def warn_ids_differing_in_case(entries: list) -> None:
    """One warning per set of ids that differ only in case: likely one animal, kept apart as written."""
    rows_by_id = defaultdict(list)
    for entry in entries:
        rows_by_id[entry.id].append(entry)
    spellings = defaultdict(list)
    for label in rows_by_id:
        spellings[label.casefold()].append(label)
    for labels in spellings.values():
        if len(labels) > 1:
            listing = ", ".join(
                f"{label!r} ({len(rows_by_id[label])} row(s), first {rows_by_id[label][0].where})" for label in labels
            )
            logger.warning("Ids that differ only in case are kept as different animals: %s", listing)


def named_list(items: list[str]) -> str:
    more = len(items) - MAX_NAMED_ROWS
    return ", ".join(items[:MAX_NAMED_ROWS]) + (f" and {more} more" if more > 0 else "")
