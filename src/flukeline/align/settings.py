"""Align stage: map every fluke onto a landmark template, then crop it at each configured size.

Two steps, one rule each:

- transforms (`align_transforms`, one job): per image a 2x3 transform from original pixels to
  the canonical *span frame* (fluke tips at x = -0.5 and +0.5, notch near y = 0, y down), fitted
  to detect's landmarks, or derived from detect's box when the landmarks are too few, too
  uncertain or fit implausibly. Both paths end in the same kind of transform, so cropping has a
  single code path. Written to results/align/align.parquet with a contact sheet.
- crops (`align`, one job per size): the template's bounding box grown by the margin, widened or
  heightened to the output's aspect (never stretched), composed with the image's transform: one
  warpAffine from the original photo per crop. Every image also gets a box-only crop, and its
  detect mask warped both ways when there is one (a 4th channel for the embed stage).

Coordinates: pixel centres at integer coordinates in the original image and in every crop (the
convention of cv2.warpAffine and of detect's keypoints); boxes are x0, y0 inclusive, x1, y1
exclusive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

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

@dataclass(frozen=True)
class AlignSettings:
    """The align.* config keys that the transform step consumes (see config.schema.yaml)."""

    template: dict
    transform: str = "similarity"
    min_keypoint_confidence: float = 0.3
    min_landmarks: int = 3
    max_residual: float = 0.15
    max_scale_ratio: float = 1.6
    max_rotation_deg: float = 90.0
    margin: float = 0.1

    @classmethod
    def from_params(cls, params: dict | None) -> "AlignSettings":
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown align settings {unknown}")
        params.setdefault("template", DEFAULT_TEMPLATE)
        params["template"] = {str(k): (float(v[0]), float(v[1])) for k, v in params["template"].items()}
        settings = cls(**params)
        if settings.transform not in TRANSFORMS:
            raise ValueError(f"align.transform must be one of {TRANSFORMS}, not {settings.transform!r}")
        if len(settings.template) < 2:
            raise ValueError("align.template needs at least two keypoints")
        return settings

    @property
    def min_points(self) -> int:
        # A similarity is fixed by 2 points, an affine transform by 3.
        return max(int(self.min_landmarks), 2 if self.transform == "similarity" else 3)

def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): width, height."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height
