"""A first abundance estimate between two capture occasions: Chapman's bias-corrected
Lincoln-Petersen estimator with its 95% interval, for the decided sightings and for the range the
pending review photos span.

Chapman (1951): N = (n1 + 1)(n2 + 1) / (m2 + 1) - 1, with n1 and n2 the individuals identified in
the first and second occasion and m2 those identified in both. Its variance is Seber's (1970):
(n1 + 1)(n2 + 1)(n1 - m2)(n2 - m2) / ((m2 + 1)^2 (m2 + 2)). The interval is Chao's (1987)
log-normal one, built on the individuals not seen, f0 = N - r (r = n1 + n2 - m2 individuals seen):
[r + f0 / C, r + f0 C] with C = exp(z sqrt(log(1 + var / f0^2))), so that it never falls below
the animals actually photographed; the symmetric normal interval N -+ z se is given beside it.
Assumptions, which the numbers cannot check: a closed population between the two occasions (no
birth, death or migration), every animal equally likely to be photographed in an occasion, and
identities right.

Identities are where photo-ID differs from tagging: a false new individual inflates N, a false
match deflates it. The decided sightings (reviewed and auto-accepted) give one estimate; the
pending `review` photos then move it, all taken as their best candidate ("all matches") or all as
new individuals (their provisional new id: "all new"), and each as whichever of the two its
calibrated probabilities make likelier ("most likely"). The estimates of the two extremes bound
what the review can still change (the range the identity uncertainty spans)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.export.sightings import CONFIRMED, PROVISIONAL

LEVEL = 0.95
SCENARIOS = {
    "decided": "decided photos only (pending review left out)",
    "all_matches": "pending review photos all their best candidate",
    "all_new": "pending review photos all new individuals",
    "most_likely": "each pending photo as its likelier outcome (P right vs P new)",
}


@dataclass(frozen=True)
class Chapman:
    n1: int
    n2: int
    m2: int
    estimate: float
    se: float
    interval: tuple[float, float]  # Chao's log-normal interval
    normal_interval: tuple[float, float]
    level: float = LEVEL

    def to_dict(self) -> dict:
        out = asdict(self)
        out["interval"], out["normal_interval"] = list(self.interval), list(self.normal_interval)
        return out


def chapman(n1: int, n2: int, m2: int, level: float = LEVEL) -> Chapman:
    """Chapman's estimate with Seber's variance and Chao's log-normal `level` interval."""
    if min(n1, n2, m2) < 0 or m2 > min(n1, n2):
        raise ValueError(f"Chapman needs 0 <= m2 <= min(n1, n2), got n1={n1}, n2={n2}, m2={m2}")
    estimate = (n1 + 1) * (n2 + 1) / (m2 + 1) - 1
    variance = (n1 + 1) * (n2 + 1) * (n1 - m2) * (n2 - m2) / ((m2 + 1) ** 2 * (m2 + 2))
    se = math.sqrt(variance)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    seen = n1 + n2 - m2
    unseen = estimate - seen
    if unseen <= 0 or variance == 0:
        interval = (float(seen), float(max(seen, estimate)))
    else:
        spread = math.exp(z * math.sqrt(math.log(1 + variance / unseen**2)))
        interval = (seen + unseen / spread, seen + unseen * spread)
    return Chapman(n1, n2, m2, estimate, se, interval, (estimate - z * se, estimate + z * se), level)


def resolved(sightings: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """The dated sightings with an individual under `scenario` (see SCENARIOS): decided photos
    as they are, pending ones as the scenario takes them, unidentified photos never."""
    decided = sightings[sightings["status"].isin(CONFIRMED)]
    if scenario == "decided":
        return decided
    pending = sightings[sightings["status"] == PROVISIONAL].copy()
    as_match = pending["candidate"].where(pending["candidate"] != "", pending["new_individual"])
    if scenario == "all_matches":
        pending["individual"] = as_match
    elif scenario == "all_new":
        pending["individual"] = pending["new_individual"]
    elif scenario == "most_likely":
        likelier_match = pending["p_correct"].fillna(0) >= pending["p_new"].fillna(0)
        pending["individual"] = as_match.where(likelier_match, pending["new_individual"])
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return pd.concat([decided, pending], ignore_index=True)


def between(sightings: pd.DataFrame, first: str, second: str, level: float = LEVEL) -> Chapman:
    """Chapman between two occasion labels of sightings with `individual` and `occasion`."""
    one = set(sightings.loc[sightings["occasion"] == first, "individual"])
    two = set(sightings.loc[sightings["occasion"] == second, "individual"])
    return chapman(len(one), len(two), len(one & two), level)


def abundance(sightings: pd.DataFrame, occasions: list[str], chosen: tuple = ()) -> dict:
    """The estimates of every scenario between the chosen occasions (default: the last two of
    `occasions`), and the range of the two extremes; None when there are fewer than two."""
    if chosen:
        unknown = [label for label in chosen if label not in occasions]
        if unknown:
            raise InputError(
                f"export.abundance_occasions: {', '.join(map(repr, unknown))} is no occasion of the sightings"
                f" (occasions: {', '.join(occasions) or 'none'})"
            )
        first, second = chosen
    elif len(occasions) >= 2:
        first, second = occasions[-2:]
    else:
        return {"occasions": list(occasions), "estimates": None, "reason": "fewer than two occasions"}
    estimates = {name: between(resolved(sightings, name), first, second) for name in SCENARIOS}
    extremes = [estimates["all_matches"], estimates["all_new"]]
    return {
        "occasions": [first, second],
        "estimates": {name: estimate.to_dict() for name, estimate in estimates.items()},
        "scenarios": SCENARIOS,
        "pending_photos": int((sightings["status"] == PROVISIONAL).sum()),
        # What reviewing the pending photos can still do to the estimate (and its intervals).
        "range": [min(e.estimate for e in extremes), max(e.estimate for e in extremes)],
        "range_with_intervals": [min(e.interval[0] for e in extremes), max(e.interval[1] for e in extremes)],
    }
