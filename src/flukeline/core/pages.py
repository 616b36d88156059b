"""The user tools' self-contained HTML pages (review, annotate): a template shipped inside its
package with one data marker, replaced by the page's data as JSON."""

from __future__ import annotations

import json
from importlib import resources

DATA_MARKER = "/*__REVIEW_DATA__*/"


def render_page(package: str, template: str, data: dict, marker: str = DATA_MARKER) -> str:
    """`package`'s `template` with `data` embedded as JSON at `marker` (`</` escaped so that no
    value can close the script element)."""
    text = resources.files(package).joinpath(template).read_text(encoding="utf-8")
    if text.count(marker) != 1:
        raise RuntimeError(f"{template} must contain {marker} exactly once")
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return text.replace(marker, blob)
