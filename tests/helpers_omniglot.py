"""What the Omniglot tests of both tiers share: the team's archive beside the clone, and the mark
that skips a test where it is absent."""

import pytest
from conftest import REPO

ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
needs_zip = pytest.mark.skipif(not ZIP.is_file(), reason=f"{ZIP} not present")
