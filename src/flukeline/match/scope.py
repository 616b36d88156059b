"""Which catalogue identities a photo may be matched with, from the date, place and side recorded
with the photos (flukeline.data.metadata; the settings are `match.scope`, ScopeSettings).

Rules, each applied only where both photos carry the value it needs (a photo without a viewpoint
is compatible with every side):
- viewpoint (on by default): two sides are compatible when they share a part and have no
  opposite parts: `left` goes with `front-left` and `back-left`, `front-left` with `left` and
  `front`, never `left` with `right` nor `front-left` with `front-right`. With `mirrored_sides`
  (auto: when embed.flip_as_new_identity is false, i.e. a mirrored photo counts as the same
  animal) left and right are one side, so a mirrored left may match a right. `compatible` and
  `incompatible` list pairs that override the rule.
- same_site (off by default): same `location`.
- within_km (off by default): catalogue photo within that many km of the query (`latitude` /
  `longitude`, great-circle distance).
- date_order (off by default): a photo cannot match an individual first seen later: the
  catalogue photo's day is not after the query's.

An identity is compatible with a query when any of its gallery photos passes every rule (for a
validation photo, the gallery is the train photos outside its fold, as the members matched it;
pseudo-labelled photos of later rounds are not consulted). `scope_topk` applies this to the
ensemble's fused candidate table, the one the submission, the decisions and the review page
read: incompatible identities are dropped and the rest re-ranked, on validation and test alike
so that the threshold and the decisions are calibrated on what the test photos get. A query whose
every candidate is incompatible keeps its best one (counted in the report): it has nothing else to
be ranked with. The members' own tables are not scoped; the local matcher's are, photo by photo
(`Scope.compatible_photos`, match/local_shortlist.py): a query is verified only against catalogue
photos that pass every rule, so no time goes on a pair the ensemble would drop and the local
member's calibration sees the candidates the ensemble keeps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.metadata import (
    DATE,
    LATITUDE,
    LOCATION,
    LONGITUDE,
    OPPOSITE,
    VIEWPOINT,
    parse_viewpoint,
    view_parts,
)
from flukeline.match.settings import ScopeSettings

EARTH_RADIUS_KM = 6371.0088


def _pair_key(a: str, b: str) -> frozenset:
    return frozenset((a, b))


def views_compatible(a: str, b: str, mirrored_sides: bool = False, compatible=(), incompatible=()) -> bool:
    """Whether photos of viewpoints `a` and `b` (canonical, flukeline.data.metadata) can show the
    same marks; an empty viewpoint is compatible with all. `compatible` / `incompatible`: pairs
    [a, b] that override the rule (symmetric)."""
    if not a or not b:
        return True
    pair = _pair_key(a, b)
    if pair in {_pair_key(*p) for p in incompatible}:
        return False
    if pair in {_pair_key(*p) for p in compatible}:
        return True
    first, second = view_parts(a), view_parts(b)
    if mirrored_sides:
        # A mirrored left shows what a right shows: one side.
        first, second = ({"left" if p == "right" else p for p in parts} for parts in (first, second))
    if not first & second:
        return False
    return not any(OPPOSITE[p] in second for p in first)


def distance_km(lat1, lon1, lat2, lon2):
    """Great-circle (haversine) distance in km; works on numbers and numpy arrays."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi, dlambda = phi2 - phi1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


@dataclass(frozen=True)
class Profile:
    """What the rules read of one photo (empty / None: not recorded)."""

    viewpoint: str = ""
    location: str = ""
    latitude: float | None = None  # None, not NaN: profiles are compared and hashed as cache keys
    longitude: float | None = None
    day: str = ""  # YYYY-MM-DD

    @classmethod
    def of(cls, row: dict) -> Profile:
        def text(column):
            value = row.get(column)
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()

        def number(column):
            value = row.get(column)
            return None if value is None or pd.isna(value) else float(value)

        return cls(text(VIEWPOINT), text(LOCATION), number(LATITUDE), number(LONGITUDE), text(DATE)[:10])


@dataclass
class Scope:
    """The active rules (settings resolved: mirrored_sides a bool) and the photos' profiles."""

    settings: ScopeSettings
    rules: list[str]
    gallery: pd.DataFrame  # id, fold, profile (known identities' train photos)
    queries: dict[str, Profile]  # image -> profile (validation and test photos)
    _cache: dict = field(default_factory=dict)

    def photo_compatible(self, query: Profile, photo: Profile) -> bool:
        s = self.settings
        if "viewpoint" in self.rules and not views_compatible(
            query.viewpoint, photo.viewpoint, bool(s.mirrored_sides), s.compatible, s.incompatible
        ):
            return False
        if "same_site" in self.rules and query.location and photo.location and query.location != photo.location:
            return False
        if "within_km" in self.rules and query.latitude is not None and photo.latitude is not None:
            if distance_km(query.latitude, query.longitude, photo.latitude, photo.longitude) > s.within_km:
                return False
        if "date_order" in self.rules and query.day and photo.day and photo.day > query.day:
            return False
        return True

    def identity_compatible(self, image: str, identity: str, fold) -> bool:
        """Any of the identity's gallery photos (outside the query's fold, for a validation photo)
        passes every rule; an identity the gallery does not hold (new_whale, pseudo-labels) passes."""
        query = self.queries.get(image, Profile())
        key = (query, identity, fold)
        if key not in self._cache:
            photos = [
                p for p, photo_fold in self.gallery_profiles.get(identity, []) if fold is None or photo_fold != fold
            ]
            self._cache[key] = not photos or any(self.photo_compatible(query, profile) for profile in photos)
        return self._cache[key]

    def pair_compatible(self, query: str, photo: str) -> bool:
        """Whether a query photo and one catalogue photo pass every rule (photos the tables do
        not hold have no values: compatible)."""
        key = ("pair", self.queries.get(query, Profile()), self.queries.get(photo, Profile()))
        if key not in self._cache:
            self._cache[key] = self.photo_compatible(key[1], key[2])
        return self._cache[key]

    def compatible_photos(self, query: str, photos) -> np.ndarray:
        """A boolean per catalogue photo (names): whether the query may be compared with it."""
        return np.fromiter((self.pair_compatible(query, p) for p in photos), dtype=bool, count=len(photos))

    @property
    def gallery_profiles(self) -> dict:
        if not hasattr(self, "_profiles"):
            grouped: dict[str, set] = {}
            for identity, fold, profile in self.gallery[["id", "fold", "profile"]].itertuples(index=False):
                grouped.setdefault(identity, set()).add((profile, fold))
            self._profiles = {identity: list(profiles) for identity, profiles in grouped.items()}
        return self._profiles


def resolve_mirrored_sides(settings: ScopeSettings, flip_as_new_identity: bool) -> ScopeSettings:
    """mirrored_sides "auto" decided by embed.flip_as_new_identity: a mirrored photo is the same
    animal (false) -> a left may match a right."""
    if settings.mirrored_sides == "auto":
        return settings.replace(mirrored_sides=not flip_as_new_identity)
    return settings


def _canonical_pairs(settings: ScopeSettings) -> ScopeSettings:
    """The compatible / incompatible pairs in canonical spelling (L -> left); an unknown
    viewpoint is an InputError naming the setting."""
    pairs = {}
    for name in ("compatible", "incompatible"):
        try:
            pairs[name] = [[parse_viewpoint(str(v)) for v in pair] for pair in getattr(settings, name)]
        except ValueError as error:
            raise InputError(f"match.scope.{name}: {getattr(settings, name)!r}: {error}") from None
    return settings.replace(**pairs)


def active_rules(settings: ScopeSettings, train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """The rules that are on and whose columns both the queries' and the gallery's tables hold."""
    both = set(train.columns) & set(test.columns)
    rules = []
    if settings.viewpoint and VIEWPOINT in both:
        rules.append("viewpoint")
    if settings.same_site and LOCATION in both:
        rules.append("same_site")
    if settings.within_km is not None and {LATITUDE, LONGITUDE} <= both:
        rules.append("within_km")
    if settings.date_order and DATE in both:
        rules.append("date_order")
    return rules


def build_scope(settings: ScopeSettings, train: pd.DataFrame, test: pd.DataFrame) -> Scope | None:
    """The scope of a run's image tables; None when no rule applies (no metadata, or all off):
    the ensemble then runs exactly as without scope."""
    # Outside the workflow (which resolves auto from embed.flip_as_new_identity), auto is that
    # setting's default, true: left and right are different sides.
    settings = _canonical_pairs(resolve_mirrored_sides(settings, flip_as_new_identity=True))
    rules = active_rules(settings, train, test)
    if not rules:
        return None
    known = train[train["id"] != NEW_WHALE]
    gallery = pd.DataFrame(
        {
            "id": known["id"].to_numpy(),
            "fold": known["fold"].to_numpy() if "fold" in known else -1,
            "profile": [Profile.of(row) for row in known.to_dict("records")],
        }
    )
    queries = {row["image"]: Profile.of(row) for row in pd.concat([train, test]).to_dict("records")}
    return Scope(settings, rules, gallery, queries)


def scope_topk(topk: pd.DataFrame, scope: Scope, depth: int) -> tuple[pd.DataFrame, dict]:
    """The top-k table without the identities incompatible with each query, re-ranked and cut to
    `depth` per query; and what was removed. A validation table (fold column) checks each query
    against the gallery outside its fold. new_whale rows (a vote's) always stay."""
    folds = topk["fold"].to_numpy() if "fold" in topk else [None] * len(topk)
    keep = np.fromiter(
        (
            identity == NEW_WHALE or scope.identity_compatible(image, identity, fold)
            for image, identity, fold in zip(topk["image"], topk["id"], folds)
        ),
        dtype=bool,
        count=len(topk),
    )
    # A query left without any candidate keeps its best one: downstream stages rank every photo.
    emptied = ~pd.Series(keep).groupby(topk["image"].to_numpy()).transform("any").to_numpy()
    first = (topk["rank"] == topk.groupby("image")["rank"].transform("min")).to_numpy()
    kept = topk[keep | (emptied & first)]
    kept = kept.groupby("image", sort=False).head(depth).copy()
    kept["rank"] = kept.groupby("image", sort=False).cumcount()
    report = {
        "rows": len(topk),
        "removed": int((~keep).sum()),
        "queries": int(topk["image"].nunique()),
        "queries_changed": int(topk.loc[~keep, "image"].nunique()),
        "queries_without_compatible_candidate": int(topk.loc[emptied, "image"].nunique()),
    }
    return kept.reset_index(drop=True), report


def scope_report(scope: Scope | None, reports: dict[str, dict]) -> dict:
    """summary.json's scope: the rules applied and, per split, the candidates removed."""
    if scope is None:
        return {"rules": [], "note": "no rule applies (no metadata on both sides, or match.scope off)"}
    return {"rules": scope.rules, "settings": scope.settings.to_dict(), **reports}
