"""The data.* settings the ingest step consumes (`IngestSettings`, checked when parsed; see
config.schema.yaml). The other data.* keys say where the data comes from (source, root, demo,
omniglot, annotations, catalogue): they decide the rule's inputs and the paths ingest is given, not
how it reads them. Standard library only: the Snakefile imports this at parse time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flukeline.core.errors import InputError
from flukeline.core.settings import StageSettings

# error: one InputError listing every bad row; skip: bad rows dropped into rejected.csv.
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclass(frozen=True, kw_only=True)
class IngestSettings(StageSettings):
    """What ingest consumes: the word for an unknown animal, the bad-row policy, the smallest photo,
    the duplicate groups that become one training id, and the number of cross-validation folds."""

    section: ClassVar[str] = "data"

    # The Id that marks an animal not in the catalogue in the user's CSVs (e.g. `unknown`). Inside
    # the workflow and in submission.csv it is Kaggle's `new_whale`, which is always understood too.
    new_label: str = "new_whale"

    # error by default: a bad row stops the run with every problem listed, so no photo is lost
    # without the user deciding so (skip: dropped and listed in rejected.csv).
    on_bad_image: str = "error"
    # Pixels: a photo with a side under this is named in a warning (with skip, a bad row); it is
    # kept otherwise, since a small photo may still be matched. 0 checks nothing.
    min_image_side: int = 32
    # Both off by default: they change the training ids (duplicates.csv shows the groups first).
    # A duplicate group's several known ids train as one id (the 3rd place's class grouping).
    group_duplicate_ids: bool = False
    # new_whale photos that duplicate each other train as one id (new_whale~group<N>).
    group_new_whale_duplicates: bool = False
    # Identity-aware cross-validation folds (flukeline.core.folds); embed.cv_folds picks among them.
    folds: int = 4

    def __post_init__(self):
        if not self.new_label.strip() or any(character in self.new_label for character in ",\r\n"):
            raise InputError(
                f"new_label must be a non-empty word without commas or line breaks, got {self.new_label!r}"
            )
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise InputError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")
        if self.folds < 2:
            raise InputError(f"folds must be >= 2, got {self.folds}")
        if self.min_image_side < 0:
            raise InputError(f"min_image_side must be >= 0, got {self.min_image_side}")
