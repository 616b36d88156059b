"""A member's input crops, from the align stage's per-size table (`CropSet`): aligned crops
(always), box-only crops (when the recipe mixes them in) and the matching mask crops (4-channel
members). A missing crop asks for the align stage to be rerun. A photo without a mask crop (the
align table's mask path empty: a run whose detector gives no masks, detect.method none or
threshold) has the whole crop as its mask, the box crop's content being all the run knows of
where the animal is; align itself gives a photo with an empty predicted mask its box.

The crops are read from their PNG files when used (`CropFiles`), never all at once: a catalogue of
33,000 photos holds 0.8 GB of crops at 128x64 and 13 GB at 512x256, and each training epoch or
embedding pass needs them one batch at a time (a 128x64 PNG decodes in ~0.1 ms)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.photo_cache import file_sha1

log = logging.getLogger(__name__)


def _path(value) -> str:
    """A table's path as text; "" where the table has none (NA, None)."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def mask_crop_key(path, sha1=file_sha1) -> str:
    """What a crop's mask crop adds to the crop's cache keys: the mask file's SHA-1 (`sha1`, e.g. a
    memoised one), or "whole" for a crop without one, whose mask is the whole crop (module docstring)."""
    path = _path(path)
    return sha1(path) if path else "whole"


def _read(path, flag: int, what: str) -> np.ndarray:
    image = cv2.imread(str(path), flag)
    if image is None:
        raise InputError(f"{path}: {what} missing or unreadable; rerun the align stage")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if flag == cv2.IMREAD_COLOR else image


class CropFiles:
    """Crops (all one size) read on use: `files[i]` is one H x W x 3 uint8 RGB crop (H x W for
    masks), `files[a:b]` or `files[boolean or index array]` another CropFiles of those rows, and
    `np.asarray(files)` their N x H x W[ x 3] array."""

    def __init__(self, paths, masks: bool = False, shape_from: CropFiles | None = None):
        self.paths = np.asarray([_path(p) for p in paths], dtype=object)
        self.masks = masks
        # Masks: the crops whose size a photo without a mask crop takes (its whole-crop mask).
        self.shape_from = shape_from

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            if self.masks and not self.paths[key] and self.shape_from is not None:
                return np.full(self.shape_from[key].shape[:2], 255, np.uint8)
            flag = cv2.IMREAD_GRAYSCALE if self.masks else cv2.IMREAD_COLOR
            return _read(self.paths[key], flag, "mask crop" if self.masks else "crop")
        shape_from = None if self.shape_from is None else self.shape_from[key]
        return CropFiles(self.paths[key], self.masks, shape_from)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if not len(self):
            return np.zeros((0, 1, 1) if self.masks else (0, 1, 1, 3), dtype or np.uint8)
        stacked = np.stack([self[i] for i in range(len(self))])
        return stacked if dtype is None else stacked.astype(dtype)


def read_crops(paths) -> np.ndarray:
    """Crops (all one size) as an N x H x W x 3 uint8 RGB array."""
    return np.asarray(CropFiles(paths))


def read_masks(paths) -> np.ndarray:
    """Mask crops as an N x H x W uint8 array (0/255)."""
    return np.asarray(CropFiles(paths, masks=True))


class CropSet:
    """The crops of a set of images, read on use: aligned (always), box-only (when the recipe
    mixes them in) and the matching mask crops (4-channel members)."""

    def __init__(self, table: pd.DataFrame, box_crops: bool, masks: bool):
        self.aligned = CropFiles(table["crop_path"])
        self.box = CropFiles(table["box_crop_path"]) if box_crops else None
        self.aligned_mask = CropFiles(table["mask_crop_path"], True, self.aligned) if masks else None
        self.box_mask = CropFiles(table["box_mask_crop_path"], True, self.box) if masks and box_crops else None
        if masks:
            without = int((self.aligned_mask.paths == "").sum())
            if without:
                note = "%d of %d crops have no mask crop (detect gave none): the whole crop is their mask"
                log.info(note, without, len(self))

    def __len__(self) -> int:
        return len(self.aligned)

    def get(self, index: int, use_box: bool):
        if use_box and self.box is not None:
            return self.box[index], None if self.box_mask is None else self.box_mask[index]
        return self.aligned[index], None if self.aligned_mask is None else self.aligned_mask[index]
