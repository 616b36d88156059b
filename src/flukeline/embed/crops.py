"""A member's input crops, read from the align stage's per-size table into memory (`CropSet`):
aligned crops (always), box-only crops (when the recipe mixes them in) and the matching mask crops
(4-channel members). A missing crop asks for the align stage to be rerun."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError


def _read_all(paths, flag: int, what: str) -> list[np.ndarray]:
    images = []
    for path in paths:
        image = cv2.imread(str(path), flag)
        if image is None:
            raise InputError(f"{path}: {what} missing or unreadable; rerun the align stage")
        images.append(image)
    return images


def read_crops(paths) -> np.ndarray:
    """Crops (all one size) as an N x H x W x 3 uint8 RGB array."""
    crops = [cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in _read_all(paths, cv2.IMREAD_COLOR, "crop")]
    return np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)


def read_masks(paths) -> np.ndarray:
    """Mask crops as an N x H x W uint8 array (0/255)."""
    masks = _read_all(paths, cv2.IMREAD_GRAYSCALE, "mask crop")
    return np.stack(masks) if masks else np.zeros((0, 1, 1), np.uint8)


class CropSet:
    """The crops of a set of images, in memory: aligned (always), box-only (when the recipe mixes
    them in) and the matching mask crops (4-channel members)."""

    def __init__(self, table: pd.DataFrame, box_crops: bool, masks: bool):
        self.aligned = read_crops(table["crop_path"])
        self.box = read_crops(table["box_crop_path"]) if box_crops else None
        self.aligned_mask = read_masks(table["mask_crop_path"]) if masks else None
        self.box_mask = read_masks(table["box_mask_crop_path"]) if masks and box_crops else None

    def __len__(self) -> int:
        return len(self.aligned)

    def get(self, index: int, use_box: bool):
        if use_box and self.box is not None:
            return self.box[index], None if self.box_mask is None else self.box_mask[index]
        return self.aligned[index], None if self.aligned_mask is None else self.aligned_mask[index]
