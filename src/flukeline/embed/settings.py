"""The embed.* settings of one ensemble member (`MemberSettings`): the shared training settings of
config.yaml's embed section with the member's own entry over them (any key may be overridden, so
members differ by backbone, input size and recipe). Nested sections (sampler, schedule, loss, ...)
are settings of their own. The recipe follows the Humpback top solutions (seed 004); defaults are
the schema's, which config.yaml's demo preset sets explicitly (bench/results/accuracy.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flukeline.core.model_reuse import DEFAULT_RETRAIN, DEFAULT_RETRAIN_ABOVE
from flukeline.core.settings import StageSettings, nested_default


@dataclass(frozen=True, kw_only=True)
class SamplerSettings(StageSettings):
    """P x K batches: P identities, K images each."""

    section: ClassVar[str] = "embed.sampler"

    identities: int = 8
    images_per_identity: int = 4


@dataclass(frozen=True, kw_only=True)
class ScheduleSettings(StageSettings):
    section: ClassVar[str] = "embed.schedule"

    type: str = "cosine"  # cosine | multistep
    warmup_epochs: float = 1.0
    milestones: tuple = ()
    gamma: float = 0.1
    swa_lr: float = 0.1  # share of lr held while SWA averages


@dataclass(frozen=True, kw_only=True)
class SwaSettings(StageSettings):
    section: ClassVar[str] = "embed.swa"

    epochs: int = 0  # last epochs averaged (0 = off)


@dataclass(frozen=True, kw_only=True)
class StagedSettings(StageSettings):
    """1st place: identities with >= min_images first, then all with the early layers frozen."""

    section: ClassVar[str] = "embed.staged"

    epochs: int = 0  # stage-1 epochs (0 = off)
    min_images: int = 1
    trainable_groups: int = 2


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingSettings(StageSettings):
    section: ClassVar[str] = "embed.early_stopping"

    patience: int = 0  # validations without gain before stopping (0 = off)


@dataclass(frozen=True, kw_only=True)
class EmbeddingSettings(StageSettings):
    section: ClassVar[str] = "embed.embedding"

    dim: int = 512
    dropout: float = 0.0


@dataclass(frozen=True, kw_only=True)
class MarginLossSettings(StageSettings):
    section: ClassVar[str] = "embed.loss.margin"

    type: str = "arcface"  # arcface | subcenter_arcface | cosface
    scale: float = 30.0
    margin: float = 0.5  # radians for the ArcFace family (seed 004), a cosine margin for CosFace
    sub_centers: int = 3
    weight: float = 1.0
    # Above this many classes each batch's softmax covers its own classes plus random others up to
    # this many (Partial FC, flukeline.embed.losses): training then grows linearly with the
    # identities instead of as their square. 1,024 leaves the demo and Omniglot presets (fewer
    # classes) exactly as before and samples ~10% of the Kaggle set's 10,008; measured in
    # bench/results/partial_fc.md. 0: every class in every batch.
    classes_per_batch: int = 1024


@dataclass(frozen=True, kw_only=True)
class TripletLossSettings(StageSettings):
    section: ClassVar[str] = "embed.loss.triplet"

    margin: float = 0.3
    weight: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LossSettings(StageSettings):
    section: ClassVar[str] = "embed.loss"

    margin: MarginLossSettings = nested_default(MarginLossSettings)
    triplet: TripletLossSettings = nested_default(TripletLossSettings)


@dataclass(frozen=True, kw_only=True)
class MemberSettings(StageSettings):
    """One member's training settings (embed.* shared keys, then embed.members.<name> over them).
    `backbone` and `size` have no default: every member names them."""

    section: ClassVar[str] = "embed"

    backbone: str
    size: tuple
    # A name registered in flukeline.embed.member_types (trained, frozen_head, zero_shot, ...).
    type: str = "trained"
    block: int = 3  # frozen_head: the last backbone block kept (timm's blocks[i])
    pool: int = 4  # frozen_head: that block's map average-pooled to pool x pool cells
    pretrained: str = "none"
    in_chans: int = 3  # 4 adds the mask crop as a 4th channel
    epochs: int = 12
    lr: float = 0.001
    head_lr_factor: float = 1.0
    weight_decay: float = 0.0002
    sampler: SamplerSettings = nested_default(SamplerSettings)
    new_whale_negatives: float = 0.0
    flip_as_new_identity: bool = True
    box_crop_probability: float = 0.0
    mask_dropout: float = 0.0
    schedule: ScheduleSettings = nested_default(ScheduleSettings)
    swa: SwaSettings = nested_default(SwaSettings)
    staged: StagedSettings = nested_default(StagedSettings)
    early_stopping: EarlyStoppingSettings = nested_default(EarlyStoppingSettings)
    validate_every: int = 1
    embedding: EmbeddingSettings = nested_default(EmbeddingSettings)
    loss: LossSettings = nested_default(LossSettings)
    augmentation: tuple = ()
    # Whether a rerun trains the member again (flukeline.core.model_reuse): always |
    # when-train-changes | never. when-train-changes reuses the stored model while at most
    # retrain_above (a share) of its training crops (with their ids and folds) were added, removed
    # or changed since it was trained. 0.1: on the demo, retraining after one catalogue cycle
    # (+206 photos, +14%) moved the untouched test half's MAP@5 by -0.003 and top-1 by +0.023
    # (README, Decisions and the catalogue), within what one seed tells apart; so a tenth of new
    # data is about where retraining starts to be worth its time. New test photos (a season to
    # identify) change nothing a member trains on: they never retrain it.
    retrain: str = DEFAULT_RETRAIN
    retrain_above: float = DEFAULT_RETRAIN_ABOVE

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MemberSettings:
        """A train rule's params: {"training": shared embed keys, "member": the member's entry}
        (the member's keys replace the shared ones whole, nested sections included)."""
        training = {k: v for k, v in params["training"].items() if k != "threshold_grid"}
        return cls.from_dict({**training, **params["member"]})


@dataclass(frozen=True, kw_only=True)
class MemberEntry(MemberSettings):
    """An entry of embed.members: the member's training settings and its ensemble weight (the
    match stage's, so that editing it never retrains)."""

    section: ClassVar[str] = "embed.members"

    weight: float = 1.0
