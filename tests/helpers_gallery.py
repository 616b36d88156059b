"""Shared by tests/unit/test_gallery_offline.py and tests/workflow/test_gallery.py: MANTAS, the
real-photo demo (tests/data/manta-demo: database/<id>/ galleries, test/ queries)."""

from pathlib import Path

MANTAS = Path(__file__).resolve().parent / "data" / "manta-demo"
