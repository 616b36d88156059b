"""The demo dataset's plan: every image to render (`PlannedImage`: Kaggle-style hex name, split,
individual, label, and the exact-share pathologies grayscale, two flukes and extreme aspect ratio),
decided before any pixel is drawn.

Train identities follow the preset's long tail (~38% `new_whale`); known animals come back in test
roughly in proportion to how often train saw them, beside individuals train never saw. Every random
choice comes from `seed` through independent numpy SeedSequence streams (`stream_rng`: population,
individual, image, structure), so the structure depends on the preset only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from flukeline.data.demo.presets import identity_sizes

# Independent random streams: spawn_key[0] says which, spawn_key[1] which item.
_STREAM_POPULATION, _STREAM_INDIVIDUAL, _STREAM_IMAGE, _STREAM_STRUCTURE = 0, 1, 2, 3

_COMPANION_SPAN_PX = 96

_NAME_PATTERN = re.compile(r"^[0-9a-f]{9}\.(jpg|png)$")


def stream_rng(seed: int, stream: int, item: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, item)))


@dataclass(frozen=True)
class PlannedImage:
    index: int  # seeds this image's random stream
    name: str
    split: str  # "train" or "test"
    individual: int
    label: str  # w_xxxxxxx, or new_whale for individuals unknown to train
    grayscale: bool
    two_flukes: bool
    extreme_ratio: bool
    viewpoint: str = ""  # left / right with the `flanks` knob (data/demo/field_records.py), else ""


def unique_hex(rng, n, digits, taken=()):
    """n distinct random lowercase hex strings of `digits` digits (Kaggle-style names)."""
    seen, out = set(taken), []
    while len(out) < n:
        for value in rng.integers(0, 16**digits, size=n - len(out)):
            text = f"{int(value):0{digits}x}"
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def plan_dataset(cfg: dict, seed: int) -> list[PlannedImage]:
    """Every image to render: split, individual, label and the exact-share pathologies."""
    rng = stream_rng(seed, _STREAM_STRUCTURE)
    n_train, n_test = int(cfg["n_train"]), int(cfg["n_test"])
    n_train_new = round(n_train * cfg["new_whale_share"])
    sizes = identity_sizes(n_train - n_train_new, int(cfg["max_images_per_id"]))
    n_known = len(sizes)
    n_test_new = round(n_test * cfg["test_new_share"])
    n_test_known = n_test - n_test_new
    ids = ["w_" + h for h in unique_hex(rng, n_known, 7)]

    slots = []  # (split, individual, label)
    for individual, size in enumerate(sizes):
        slots += [("train", individual, ids[individual])] * int(size)
    slots += [("train", n_known + k, "new_whale") for k in range(n_train_new)]
    # Known animals come back in test roughly in proportion to how often train saw them.
    for individual in np.sort(rng.choice(n_known, size=n_test_known, p=sizes / sizes.sum())):
        slots.append(("test", int(individual), ids[individual]))
    first_test_new = n_known + n_train_new
    # Photos per new animal in test: 1 (the default) makes each a different animal; more give the
    # new individuals several photos to be grouped (match/new_groups.py).
    per_new = int(cfg["new_test_photos"])
    slots += [("test", first_test_new + k // per_new, "new_whale") for k in range(n_test_new)]

    n = len(slots)
    names = unique_hex(rng, n, 9)

    def exact_share(share):
        flags = np.zeros(n, bool)
        flags[rng.permutation(n)[: round(share * n)]] = True
        return flags

    gray, two, extreme = (exact_share(cfg[k]) for k in ("grayscale_share", "two_fluke_prob", "extreme_ratio_prob"))
    extreme &= ~two  # one pathology per image keeps each one readable
    return [
        PlannedImage(i, names[i] + ".jpg", split, individual, label, bool(gray[i]), bool(two[i]), bool(extreme[i]))
        for i, (split, individual, label) in enumerate(slots)
    ]
