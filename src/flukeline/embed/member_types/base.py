"""What every member type shares: the train rule's job (`TrainJob`), and the base class
`MemberType` with the fold split (fit rows without the fold; new_whale kept only as negatives when
new_whale_negatives is set; pseudo-labelled test images appended), the validation fold and its
gallery (`Validation`: crops, truth from core.folds.validation_truth, the threshold grid), and the
writes of a finished member (weights, history CSV, curves)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import nn

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import threshold_grid
from flukeline.embed.crops import CropSet
from flukeline.embed.curves import plot_curves
from flukeline.embed.model import save_model
from flukeline.embed.settings import MemberSettings


@dataclass(frozen=True)
class TrainJob:
    """One train_member job: the training table and crops, the fold held out, the member's
    settings, and the rule's raw params (`{"training", "member", "seed"}`: the seed, the
    validation grid (training's threshold_grid) and the trained members' weights-file digest)."""

    train: pd.DataFrame
    align: pd.DataFrame
    fold: int
    params: dict[str, Any]
    model_path: Path
    history_path: Path
    curves_path: Path
    threads: int = 1
    pseudo_labels: pd.DataFrame | None = None
    cache_dir: Path | None = None  # per-crop results kept across runs (frozen trunks' features)

    @cached_property
    def settings(self) -> MemberSettings:
        return MemberSettings.from_params(self.params)

    @property
    def seed(self) -> int:
        """The run's seed for this fold."""
        return int(self.params.get("seed", 0)) + self.fold

    @property
    def grid(self) -> np.ndarray:
        """The new_whale threshold grid validation scores on (the match stage's)."""
        grid = self.params["training"].get("threshold_grid")
        if grid is None:
            raise InputError(
                "a member's params need training.threshold_grid (match.threshold_grid: validation scores"
                " MAP@5 on the grid the match stage calibrates on)"
            )
        return threshold_grid(grid)


@dataclass(frozen=True)
class Validation:
    """The held-out fold (crops, truth) and the training side's identified images (the gallery)."""

    val_set: CropSet
    truth: np.ndarray
    gallery_set: CropSet
    gallery_ids: np.ndarray
    grid: np.ndarray


class MemberType:
    """A member type: subclasses implement build, train and from_meta and register themselves
    with `@register_member_type(name)`."""

    name: ClassVar[str] = ""
    # Whether the fit rows take the previous round's pseudo-labelled test images.
    uses_pseudo_labels: ClassVar[bool] = True

    def build(self, settings: MemberSettings) -> nn.Module:
        """The member's network, initialised as the type wants it before training."""
        raise NotImplementedError

    def train(self, job: TrainJob) -> None:
        """Train (or score) the member without job.fold and write its weights, history and curves."""
        raise NotImplementedError

    def from_meta(self, meta: dict) -> nn.Module:
        """The network a weights file with this description holds (its weights not loaded)."""
        raise NotImplementedError

    # Shared steps of the types' train().

    @staticmethod
    def train_crops(job: TrainJob) -> pd.DataFrame:
        """The align table's training images, indexed by image."""
        return job.align[job.align["split"] == "train"].set_index("image")

    def fit_split(self, job: TrainJob, settings: MemberSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(fit: image, id of the training images outside the fold, new_whale only when
        new_whale_negatives is set, then the pseudo-labelled test images; their align rows)."""
        fit = job.train[job.train["fold"] != job.fold][["image", "id"]]
        if not settings.new_whale_negatives:
            fit = fit[fit["id"] != NEW_WHALE]
        rows = self.train_crops(job).loc[fit["image"]].reset_index()
        pseudo = job.pseudo_labels
        if self.uses_pseudo_labels and pseudo is not None and len(pseudo):
            # Test images the previous round matched confidently train as members of that identity.
            tests = job.align[job.align["split"] == "test"].set_index("image").loc[pseudo["image"]].reset_index()
            rows = pd.concat([rows, tests], ignore_index=True)
            fit = pd.concat([fit, pseudo[["image", "id"]]], ignore_index=True)
        return fit, rows

    def validation(self, job: TrainJob, settings: MemberSettings) -> Validation:
        """The fold's crops and truth, and the identified training images outside it (the gallery
        whose identity centres validation searches)."""
        train, fold = job.train, job.fold
        crops = self.train_crops(job)
        masks = settings.in_chans == 4
        val = train[train["fold"] == fold]
        gallery = train[(train["fold"] != fold) & (train["id"] != NEW_WHALE)]
        return Validation(
            val_set=CropSet(crops.loc[val["image"]].reset_index(), box_crops=False, masks=masks),
            truth=validation_truth(train, fold).loc[val["image"]].to_numpy(),
            gallery_set=CropSet(crops.loc[gallery["image"]].reset_index(), box_crops=False, masks=masks),
            gallery_ids=gallery["id"].to_numpy(),
            grid=job.grid,
        )

    @staticmethod
    def write(job: TrainJob, model: nn.Module, meta: dict, history: list[dict], title: str) -> None:
        """The finished member: weights with their description, history CSV and curves."""
        save_model(model, job.model_path, meta)
        write_csv_atomic(pd.DataFrame(history), job.history_path)
        plot_curves(history, job.curves_path, title=title)


def untrained_row(val_map5: float, val_threshold: float) -> dict:
    """The history row of a member before (or without) training: epoch 0, no loss."""
    return {
        "epoch": 0,
        "loss": float("nan"),
        "lr": 0.0,
        "val_map5": val_map5,
        "val_threshold": val_threshold,
        "seconds": 0.0,
    }
