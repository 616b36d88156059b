"""What a field team records with each demo photo (knobs `metadata` and `flanks`, both off by
default so that the default demo's files stay byte-identical): encounters, dates, sites and the
side of the animal photographed, written as the metadata columns ingest reads
(flukeline.data.metadata).

- metadata: an individual's photos of one split come in encounters of 1-3 consecutive photos
  (one day, one site). Each individual has a home site among `sites` (photographed there with
  probability `home_site_prob`, else at another site); train encounters fall in the seasons
  2019-2022 (June to October), test encounters in the 2023 season, as a new season's batch.
  Each site has a position (about 55 km apart along a coast) and a photo's latitude/longitude
  lie within ~2 km of its site.
- flanks: each photo shows the animal's left or right side (`viewpoint`), and the two sides are
  marked differently: a right-side photo is rendered from a second pattern drawn for the
  individual (its own random stream), so the same animal looks like another one from its other
  side, as flank-marked animals do.

Every draw comes from its own random streams (`_STREAM_RECORDS`, `_STREAM_FLANK`), so the other
images and tables do not change when these knobs are set."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

from flukeline.data.demo.plan import PlannedImage, stream_rng

_STREAM_RECORDS, _STREAM_FLANK = 4, 5
TRAIN_SEASONS, TEST_SEASON = (2019, 2020, 2021, 2022), 2023
SEASON_START, SEASON_DAYS = (6, 1), 150  # June to October
SITE_SPACING_DEG, SITE_JITTER_DEG = 0.5, 0.02
FIRST_SITE = (-20.0, 44.0)  # latitude, longitude of site 0
COLUMNS = ["encounter", "date", "location", "latitude", "longitude"]


def with_flanks(plan: list[PlannedImage], seed: int) -> list[PlannedImage]:
    """The plan with each image's side (left or right, evenly) set: `viewpoint`."""
    rng = stream_rng(seed, _STREAM_FLANK)
    sides = rng.integers(0, 2, size=len(plan))
    return [dataclasses.replace(image, viewpoint=("left", "right")[int(s)]) for image, s in zip(plan, sides)]


def flank_stream(individual: int) -> tuple[int, int]:
    """(stream, item) of the random stream that draws an individual's right-side pattern."""
    return _STREAM_FLANK, 1 + individual  # item 0 is the side draw


def field_records(plan: list[PlannedImage], cfg: dict, seed: int) -> dict[str, dict]:
    """image name -> {encounter, date, location, latitude, longitude} for every planned image."""
    rng = stream_rng(seed, _STREAM_RECORDS)
    n_sites = int(cfg["sites"])
    individuals = sorted({image.individual for image in plan})
    home = dict(zip(individuals, rng.integers(0, n_sites, size=len(individuals))))
    records: dict[str, dict] = {}
    by_unit: dict[tuple, list[PlannedImage]] = {}
    for image in plan:
        by_unit.setdefault((image.individual, image.split), []).append(image)
    for (individual, split), images in sorted(by_unit.items()):
        position, count = 0, 0
        while position < len(images):
            size = int(rng.integers(1, 4))
            encounter = images[position : position + size]
            position += size
            count += 1
            at_home = rng.uniform() < float(cfg["home_site_prob"])
            site = int(home[individual]) if at_home or n_sites == 1 else int(rng.integers(0, n_sites))
            season = TEST_SEASON if split == "test" else int(rng.choice(TRAIN_SEASONS))
            day = date(season, *SEASON_START) + timedelta(days=int(rng.integers(0, SEASON_DAYS)))
            for image in encounter:
                lat = FIRST_SITE[0] - SITE_SPACING_DEG * site + rng.uniform(-SITE_JITTER_DEG, SITE_JITTER_DEG)
                lon = FIRST_SITE[1] + rng.uniform(-SITE_JITTER_DEG, SITE_JITTER_DEG)
                records[image.name] = {
                    "encounter": f"{split}-{individual}-{count}",
                    "date": day.isoformat(),
                    "location": f"site{site + 1}",
                    "latitude": round(float(lat), 5),
                    "longitude": round(float(lon), 5),
                }
    return records
