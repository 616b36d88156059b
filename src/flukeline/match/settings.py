"""The match.* settings, one class per step, so that a rule's params are exactly what its step
consumes (`Settings.pick`) and an edit elsewhere never reruns it:

- `RankingSettings`: what every step that ranks identities shares (top_k, candidates, the
  new_whale threshold and its calibration grid);
- `SearchSettings`: one member's search (templates, flip fusion, the FAISS index);
- `EnsembleSettings`: the fusion of the members' top-k tables and the pseudo-labels;
- `LocalFeatureSettings` / `LocalMatchSettings`: the local-feature member's extraction and pairs;
- `DecisionSettings`: match / new / review cuts;
- `MatchSettings`: the whole section (with the keys that only shape the DAG: pseudo-label rounds,
  the local method, size and weight, the pseudo-labelled members' weight, use_leaks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flukeline.core.errors import InputError
from flukeline.core.settings import StageSettings, nested_default


@dataclass(frozen=True, kw_only=True)
class CentreSettings(StageSettings):
    """3rd place's trimmed identity centres: identities with >= min_images drop their farthest
    drop_share of images, twice."""

    section: ClassVar[str] = "match.centres"

    min_images: int = 4
    drop_share: float = 0.25


@dataclass(frozen=True, kw_only=True)
class RankingSettings(StageSettings):
    section: ClassVar[str] = "match"

    top_k: int = 5  # Kaggle's MAP@5
    candidates: int = 20  # identities kept per query in the top-k tables
    # calibrate: the best MAP@5 on the validation folds over threshold_grid; or a fixed value of new_whale_score.
    new_whale_threshold: str | float = "calibrate"
    threshold_grid: tuple = (-0.2, 1.0, 0.01)  # low, high, step
    # What the threshold is compared with: lift (a candidate's similarity minus the mean of the
    # photo's next identities, match/cohort.py) or similarity (the raw score). lift, because the
    # threshold is chosen on validation photos matched against the other folds and applied to test
    # photos matched against the whole catalogue, whose scores all rise with it: the cohort cancels
    # that shift (bench/results/new_share.md).
    new_whale_score: str = "lift"


@dataclass(frozen=True, kw_only=True)
class SearchSettings(RankingSettings):
    """One member's search of the gallery (match_member rule)."""

    templates: str = "centres"  # centres (one per identity) | images (every gallery image)
    centres: CentreSettings = nested_default(CentreSettings)
    flip_fusion: bool = True  # a query's and its mirror's similarities averaged (seed 004)
    ann_above: int = 100000  # gallery size above which FAISS HNSW replaces the exact search
    hnsw_m: int = 32
    ef_search: int = 128


@dataclass(frozen=True, kw_only=True)
class FusionSettings(StageSettings):
    """match.ensemble as the ensemble step reads it (pseudo_label_weight reaches it in the weights)."""

    section: ClassVar[str] = "match.ensemble"

    method: str = "average"  # average | vote
    weights: str = "fit"  # fit: chosen on validation (simplex grid); config: each member's weight
    weight_step: float = 0.1
    weight_min_gain: float = 0.01  # validation MAP@5 the fitted weights must gain over the configured


@dataclass(frozen=True, kw_only=True)
class EnsembleSection(FusionSettings):
    pseudo_label_weight: float = 2.0  # pseudo-labelled members' weight factor (2nd place: 2)


@dataclass(frozen=True, kw_only=True)
class PseudoLabelSettings(StageSettings):
    section: ClassVar[str] = "match.pseudo_labels"

    # Top-1 similarity a test image needs; auto: the lowest at which validation reaches min_precision.
    min_similarity: str | float = "auto"
    min_precision: float = 0.9
    min_margin: float = 0.1


@dataclass(frozen=True, kw_only=True)
class PseudoLabelSection(PseudoLabelSettings):
    rounds: int = 0


@dataclass(frozen=True, kw_only=True)
class ScopeSettings(StageSettings):
    """Which identities a photo may be matched with, from the date, place and side recorded with
    the photos (match/scope.py). Each rule applies only where both photos carry its value, so
    without metadata nothing changes."""

    section: ClassVar[str] = "match.scope"

    # Sides that cannot show the same marks are never candidates (left vs right, front-left vs
    # front-right); on by default: it acts only where both photos have a viewpoint.
    viewpoint: bool = True
    # auto: left and right are one side when embed.flip_as_new_identity is false (a mirrored photo
    # is the same animal, so a mirrored left may match a right); true / false: say so.
    mirrored_sides: str | bool = "auto"
    compatible: tuple = ()  # [[a, b], ...] viewpoint pairs compatible whatever the rule says
    incompatible: tuple = ()  # [[a, b], ...] viewpoint pairs never compared
    # Off by default: animals move between sites; on, a photo is matched within its own site.
    same_site: bool = False
    within_km: float | None = None  # catalogue photos farther than this (latitude/longitude) are out
    # A photo cannot match an individual first seen after it (off: catalogues are not always dated in order).
    date_order: bool = False
    # Viewpoints estimated for the photos without one, from the labelled share (a classifier on the
    # members' embeddings, match/viewpoint_estimate.py). Off by default: on the demo with flanks (the
    # sides marked differently, nothing else telling them apart) it stayed at chance, 0.54 on the
    # hidden half of the labels, and used anyway it cost 0.03 of MAP@5 (bench/results/scope_estimate.md).
    estimate: bool = False
    # The cross-validated accuracy the estimate needs before scope uses it: a wrong side removes the
    # true individual from a photo's candidates, a right one only candidates that could not be it.
    # On the demo with every label replaced by sides right at this rate, photos with a wrong-side
    # id in the top 5 fell 157 -> 36 for 0.006 of MAP@5; at 0.9, to 44 for 0.018 (same file).
    estimate_min_accuracy: float = 0.95

    def __post_init__(self):
        if self.mirrored_sides not in ("auto", True, False):
            raise InputError(f"match.scope.mirrored_sides must be auto, true or false, got {self.mirrored_sides!r}")
        if self.within_km is not None and not float(self.within_km) > 0:
            raise InputError(f"match.scope.within_km must be a positive distance or null, got {self.within_km!r}")
        if not 0 <= float(self.estimate_min_accuracy) <= 1:
            raise InputError(
                f"match.scope.estimate_min_accuracy must lie in [0, 1], got {self.estimate_min_accuracy!r}"
            )
        for name in ("compatible", "incompatible"):
            for pair in getattr(self, name):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise InputError(f"match.scope.{name}: each entry is a pair of viewpoints, got {pair!r}")


@dataclass(frozen=True, kw_only=True)
class EnsembleSettings(RankingSettings):
    """The ensemble step: fusion of the members' tables, calibration, pseudo-labels."""

    ensemble: FusionSettings = nested_default(FusionSettings)
    scope: ScopeSettings = nested_default(ScopeSettings)
    pseudo_labels: PseudoLabelSettings = nested_default(PseudoLabelSettings)
    # The share of new individuals the threshold (and the decision cuts) are chosen for: auto, the
    # EM estimate from the test photos' own scores; validation, the validation folds' share; or a
    # number the user knows (match/new_share.py; bench/results/new_share.md measured auto).
    new_share: str | float = "auto"


@dataclass(frozen=True, kw_only=True)
class LocalFeatureSettings(StageSettings):
    """The local features of each crop (method and size are in the rule's path)."""

    section: ClassVar[str] = "match.local"

    features: int = 500  # keypoints kept per crop or photo (LightGlue's time per pair grows with it)
    # SIFT's contrastThreshold: OpenCV's 0.04 loses low-contrast photos' keypoints (bench/results/local.md).
    sift_contrast: float = 0.01
    # source photo: the detect box's longer side reduced to at most this many pixels ...
    long_side: int = 768
    # ... and smaller boxes scaled up to it only with upscale (HotSpotter's 700-px chips): with SIFT
    # it lost rank-1 on the demo's whole photos and the mantas (bench/results/local.md).
    upscale: bool = False


@dataclass(frozen=True, kw_only=True)
class LocalPairSettings(StageSettings):
    section: ClassVar[str] = "match.local"

    shortlist: int = 25  # the global ensemble's best gallery images verified per query
    # The LNBNN ranking over every catalogue descriptor (match/local_index.py): its best identities'
    # best-voted photos verified too (0 identities: the global shortlist only). Photo features
    # only: on the demo's aligned crops it lowered known-identity rank-1 (bench/results/local.md).
    lnbnn_identities: int = 10
    photos_per_identity: int = 3  # 0: all of them
    lnbnn_k: int = 4  # HotSpotter's K
    # The normaliser: 0, the (K+1)-th neighbour (HotSpotter's default); N, the first of the N
    # neighbours after the K voters that is of another identity than theirs (HotSpotter's "name"
    # rule). See local_index.other_identity_normalisers for why, bench/results/lnbnn_normaliser.md.
    lnbnn_normaliser_depth: int = 10
    # Exact search below this many gallery descriptors; above, IVF with 8-bit codes (bench/results/local.md).
    exact_below: int = 100_000
    nprobe: int = 16
    ratio: float = 0.8  # Lowe's ratio test
    ransac_threshold: float = 4.0  # MAGSAC reprojection threshold, crop pixels
    # An identity's evidence: lnbnn, its verified inliers weighed by LNBNN distinctiveness over the
    # catalogue (HotSpotter's nsum after spatial verification; SIFT) | inliers, its best photo's
    # inlier count. lnbnn ranked the right individual first more often on every set we measured
    # (bench/results/local.md, "Verified inliers weighed by LNBNN"); see match/local_tables.py.
    score: str = "lnbnn"
    # Mirrored views the same individual (faces, symmetric marks): each query's SIFT descriptors
    # are matched as they are and mirrored (local_features.mirror_sift), so a photo of the other
    # side can verify (by a reflecting homography). Off for chiral marks (flukes, fins, flanks,
    # characters: a mirrored b is a d); workflow/presets/face.yaml turns it on.
    mirrors: bool = False


@dataclass(frozen=True, kw_only=True)
class LocalSection(LocalPairSettings, LocalFeatureSettings):
    """match.local as config.yaml holds it."""

    method: str = "none"  # none | sift | aliked_lightglue | disk_lightglue
    # photo: features of the detect box on the photo at long_side; crop: of the aligned crops at
    # size; auto: crop where the learned detector's landmarks align the crops, else photo
    # (bench/results/local.md: each wins where auto picks it).
    source: str = "auto"
    size: tuple | None = None  # crops matched (source crop); None: align.sizes[0]
    weight: float = 1.0  # its weight under ensemble.weights config


@dataclass(frozen=True, kw_only=True)
class LocalMatchSettings(RankingSettings):
    """The local member's pairs: the global ensemble's shortlist (fused as the ensemble step
    fuses) re-scored, calibrated and written as a member's tables."""

    ensemble: FusionSettings = nested_default(FusionSettings)
    flip_fusion: bool = SearchSettings.flip_fusion
    local: LocalPairSettings = nested_default(LocalPairSettings)
    # The ensemble's scope, on the pairs (match/local_shortlist.py): none the ensemble would drop.
    scope: ScopeSettings = nested_default(ScopeSettings)


@dataclass(frozen=True, kw_only=True)
class NewGroupSettings(StageSettings):
    """New individuals grouped across a batch (match/new_groups.py): provisional ids new_0001 ..."""

    section: ClassVar[str] = "match.decision.new_groups"

    enabled: bool = True
    # The pairwise precision the grouping cut reaches on validation pairs: precision first, since
    # a wrong pair merges two animals while a missed one only leaves a photo for the reviewer.
    precision: float = 0.95
    min_pairs: int = 10  # validation pairs the cut must take (fewer: no photos grouped)
    # complete: every pair in a group at or above the cut (the conservative one) | average
    linkage: str = "complete"
    # Photos decided new are grouped, and those with P(new individual) at least this (review photos).
    min_p_new: float = 0.5

    def __post_init__(self):
        if not 0 < float(self.precision) <= 1:
            raise InputError(f"match.decision.new_groups.precision: {self.precision} is no precision in (0, 1]")
        if self.linkage not in ("complete", "average"):
            raise InputError(f"match.decision.new_groups.linkage must be complete or average, got {self.linkage!r}")
        if not 0 <= float(self.min_p_new) <= 1:
            raise InputError(f"match.decision.new_groups.min_p_new must lie in [0, 1], got {self.min_p_new}")


@dataclass(frozen=True, kw_only=True)
class DecisionSettings(StageSettings):
    """results/decisions.csv: the lowest cuts at which validation reaches these precisions."""

    section: ClassVar[str] = "match.decision"

    auto_accept_precision: float = 0.95
    auto_new_precision: float = 0.95
    min_support: int = 10  # validation photos a cut must take
    new_groups: NewGroupSettings = nested_default(NewGroupSettings)


@dataclass(frozen=True, kw_only=True)
class MatchSettings(SearchSettings):
    """The whole match section."""

    use_leaks: bool = False  # a test photo duplicating training photos lists their ids first
    new_share: str | float = EnsembleSettings.new_share
    ensemble: EnsembleSection = nested_default(EnsembleSection)
    local: LocalSection = nested_default(LocalSection)
    pseudo_labels: PseudoLabelSection = nested_default(PseudoLabelSection)
    decision: DecisionSettings = nested_default(DecisionSettings)
    scope: ScopeSettings = nested_default(ScopeSettings)
