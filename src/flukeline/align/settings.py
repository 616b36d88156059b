"""The align.* settings the transform step consumes (`AlignSettings`, checked when parsed; see
config.schema.yaml), the default template (the demo population's mean landmark positions, span
units: tips at x = -0.5 and +0.5, notch near y = 0, y down), the box crops' paddings and
`<W>x<H>` size names."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from flukeline.core.errors import InputError
from flukeline.core.settings import StageSettings

log = logging.getLogger(__name__)

# The demo's mean landmark positions (flukeline.data.demo.presets.CANONICAL_KEYPOINTS, span units); the config
# normally names the template, this is only the default for callers that pass none.
DEFAULT_TEMPLATE = {
    "left_tip": (-0.5, -0.06),
    "notch": (0.0, 0.04),
    "right_tip": (0.5, -0.06),
    "left_trailing_mid": (-0.25, -0.035),
    "right_trailing_mid": (0.25, -0.035),
    "peduncle": (0.0, 0.33),
}

TRANSFORMS = ("similarity", "affine")

# What fills a box crop around the box (flukeline.align.geometry.box_crop): context = the photo
# around the box, constant (black) only beyond the photo's edges; constant = black around the box
# and its margin; reflect = the box and its margin mirrored at their edges.
PADDINGS = ("context", "constant", "reflect")

# Context invents no pixels (the box is shown as the photo shows it) and keeps what a loose box
# cut off; a whole-photo box (detect.method none) gets black bars, as under constant.
DEFAULT_PADDING = "context"


def _template_default() -> dict:
    return dict(DEFAULT_TEMPLATE)


@dataclass(frozen=True, kw_only=True)
class AlignSettings(StageSettings):
    """The align.* config keys that the transform step consumes (see config.schema.yaml); `sizes`
    shapes the DAG (one crop job per size) and is not a setting of the step."""

    section: ClassVar[str] = "align"

    template: dict = field(default_factory=_template_default)
    transform: str = "similarity"
    min_keypoint_confidence: float = 0.3
    min_landmarks: int = 3
    max_residual: float = 0.15
    max_scale_ratio: float = 1.6
    max_rotation_deg: float = 90.0
    margin: float = 0.1
    padding: str = DEFAULT_PADDING  # box crops only (the contact sheet here; crops.py for the crops)

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise InputError(f"align.transform must be one of {TRANSFORMS}, not {self.transform!r}")
        check_padding(self.padding)
        if len(self.template) < 2:
            raise InputError("align.template needs at least two keypoints")
        # Keypoint name -> (x, y) floats, whatever the YAML gave (lists, ints).
        object.__setattr__(self, "template", {str(k): (float(v[0]), float(v[1])) for k, v in self.template.items()})

    @classmethod
    def from_params(cls, params: dict | None) -> AlignSettings:
        """The settings of a rule's params (absent keys take the defaults)."""
        return cls.from_dict(params)

    @property
    def min_points(self) -> int:
        # A similarity is fixed by 2 points, an affine transform by 3.
        return max(int(self.min_landmarks), 2 if self.transform == "similarity" else 3)


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise InputError(f"align.padding must be one of {PADDINGS}, not {padding!r}")
    return padding


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): width, height."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height
