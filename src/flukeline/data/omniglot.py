"""Omniglot as a re-identification dataset in the Kaggle Humpback layout (a real, external source).

Omniglot (Lake et al., MIT licence) holds handwritten characters of many alphabets, each drawn
once by 20 different people. Read as an identification problem: identity = character
(`<alphabet>_<characterNN>`), each drawer's version = one sighting.

The archive must hold `<top folder>/<alphabet>/<characterNN>/<id>_<drawer>.png` (as
`images_background_small1.zip` and Omniglot's other background/evaluation zips do).

The split (all random choices from `seed`):
- characters are visited in a seeded random order and added while the total stays within
  `max_images`; every 1/new_fraction-th of them (an exact share at any prefix) is *new*: all its
  train-side images are labelled `new_whale` and its test images' truth is `new_whale`;
- a known character gets `train_drawers` = [lo, hi] drawers in train (uniform count per character:
  a small long tail) and `test_drawers` other drawers in test; a new one gets `new_train_drawers`
  and `new_test_drawers`. A drawer never appears in both train and test of one character.
- each character's drawers come from its own random stream, so raising `max_images` only adds
  characters and leaves the earlier ones unchanged.

Written under `out_root`: train.csv (Image,Id), sample_submission.csv (test order, placeholder
ids), train/*.png, test/*.png: the archive's PNG bytes unchanged (1-bit grayscale; ingest converts
them to RGB), under opaque random names (a name never reveals the character).
Written at `truth_path` (outside out_root; only the evaluation may read it): the test identities,
and `<truth stem>_sources.csv` beside it: each image's split, id, alphabet, character, drawer and
archive member.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_bytes_atomic, write_csv_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.demo.plan import unique_hex

# The split settings (config data.omniglot, less the zip path), with their defaults.
DEFAULTS: dict = {
    "new_fraction": 0.25,  # share of the used characters held out entirely (new individuals)
    "train_drawers": [4, 6],  # drawers in train per known character: uniform in [lo, hi]
    "test_drawers": 2,  # further drawers in test per known character
    "new_train_drawers": 2,  # train images (labelled new_whale) per new character
    "new_test_drawers": 2,  # test images (truth new_whale) per new character
    "max_images": 1000,  # cap on train + test images: characters are added while they fit
}

_MEMBER = re.compile(
    r"^(?P<top>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/(?P<stem>[0-9]+_(?P<drawer>[0-9]+))\.png$"
)

_NAME = re.compile(r"^[0-9a-f]{9}\.png$")

_STREAM_ORDER, _STREAM_CHARACTER, _STREAM_NAMES = 0, 1, 2

# Distinct from the demo's streams so that the same seed gives unrelated draws.
_SOURCE_KEY = 7


@dataclass(frozen=True)
class OmniglotImage:
    name: str  # file name in train/ or test/
    split: str  # train | test
    label: str  # the character's id in train.csv / the truth, or new_whale
    character: str  # <alphabet>_<characterNN>, also for new characters
    alphabet: str
    drawer: int
    member: str  # path inside the zip


def _rng(seed: int, stream: int, item: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SOURCE_KEY, stream, item)))


def character_id(alphabet: str, character: str) -> str:
    """'Early_Aramaic', 'character01' -> 'Early_Aramaic_character01' (no spaces: ids are
    space-separated in a submission)."""
    return re.sub(r"\s+", "_", f"{alphabet}_{character}")


def read_archive(zip_path: str | os.PathLike) -> dict[str, dict]:
    """Characters in the archive: {character id: {"alphabet", "character", "drawers": {drawer: member}}}.

    Raises InputError naming the path when the file is missing or not a zip, and naming the
    offending entries when the layout is not Omniglot's.
    """
    path = Path(zip_path)
    if not path.is_file():
        raise InputError(f"Omniglot archive {path} does not exist (config data.omniglot.zip)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"Omniglot archive {path} is not a readable zip file ({exc})") from exc
    expected = "<top folder>/<alphabet>/<characterNN>/<id>_<drawer>.png"
    unexpected = [m for m in members if not _MEMBER.match(m)]
    if unexpected:
        raise InputError(
            f"Omniglot archive {path}: {len(unexpected)} entr{'y does' if len(unexpected) == 1 else 'ies do'} not"
            f" follow the layout {expected}, e.g. " + ", ".join(repr(m) for m in unexpected[:5])
        )
    if not members:
        raise InputError(f"Omniglot archive {path} holds no images (expected {expected})")
    tops = sorted({_MEMBER.match(m)["top"] for m in members})
    if len(tops) > 1:
        raise InputError(f"Omniglot archive {path}: expected one top folder, found {', '.join(tops[:5])}")
    characters: dict[str, dict] = {}
    problems = []
    for member in sorted(members):
        match = _MEMBER.match(member)
        key = character_id(match["alphabet"], match["character"])
        entry = characters.setdefault(
            key, {"alphabet": match["alphabet"], "character": match["character"], "drawers": {}}
        )
        if (entry["alphabet"], entry["character"]) != (match["alphabet"], match["character"]):
            problems.append(f"{member!r} and another folder both map to the id {key!r}")
            continue
        drawer = int(match["drawer"])
        if drawer in entry["drawers"]:
            problems.append(f"{member!r} repeats drawer {drawer} of {entry['drawers'][drawer]!r}")
        entry["drawers"][drawer] = member
    if problems:
        raise InputError(f"Omniglot archive {path}: " + "; ".join(problems[:5]))
    return characters


def resolve_settings(settings: dict | None) -> dict:
    """DEFAULTS with `settings` merged over them; InputError naming an unknown or invalid setting."""
    resolved = dict(DEFAULTS)
    for key, value in (settings or {}).items():
        if key not in DEFAULTS:
            raise InputError(f"unknown Omniglot setting {key!r} (known: {', '.join(sorted(DEFAULTS))})")
        resolved[key] = value
    lo, hi = (int(v) for v in resolved["train_drawers"])
    resolved["train_drawers"] = [lo, hi]
    if not 1 <= lo <= hi:
        raise InputError(f"data.omniglot.train_drawers must be [lo, hi] with 1 <= lo <= hi, got {[lo, hi]}")
    if not 0 <= float(resolved["new_fraction"]) < 1:
        raise InputError(f"data.omniglot.new_fraction must lie in [0, 1), got {resolved['new_fraction']}")
    if int(resolved["test_drawers"]) < 1:
        raise InputError(f"data.omniglot.test_drawers must be >= 1, got {resolved['test_drawers']}")
    for key in ("new_train_drawers", "new_test_drawers"):
        if int(resolved[key]) < 0:
            raise InputError(f"data.omniglot.{key} must be >= 0, got {resolved[key]}")
    if int(resolved["max_images"]) < 1:
        raise InputError(f"data.omniglot.max_images must be >= 1, got {resolved['max_images']}")
    return resolved


def plan_split(characters: dict[str, dict], settings: dict | None = None, seed: int = 0) -> list[OmniglotImage]:
    """Every image of the converted dataset with its split and label (see the module docstring)."""
    cfg = resolve_settings(settings)
    lo, hi = cfg["train_drawers"]
    n_test, new_fraction = int(cfg["test_drawers"]), float(cfg["new_fraction"])
    new_train, new_test = int(cfg["new_train_drawers"]), int(cfg["new_test_drawers"])
    max_images = int(cfg["max_images"])
    keys = sorted(characters)
    need_known, need_new = hi + n_test, new_train + new_test
    short = [
        f"{key} ({len(characters[key]['drawers'])})"
        for key in keys
        if len(characters[key]["drawers"]) < max(need_known, need_new if new_fraction > 0 else 0)
    ]
    if short:
        raise InputError(
            f"{len(short)} Omniglot character(s) have fewer drawers than the split needs (known characters:"
            f" train_drawers[1] + test_drawers = {need_known}; new ones: {need_new}): {', '.join(short[:5])}"
        )

    chosen: list[tuple[str, bool, list[int], list[int]]] = []  # key, is_new, train drawers, test drawers
    total = 0
    for position, index in enumerate(_rng(seed, _STREAM_ORDER).permutation(len(keys))):
        key = keys[index]
        # Exactly floor(n * new_fraction) of the first n characters are new, for every n.
        is_new = int((position + 1) * new_fraction) > int(position * new_fraction)
        rng = _rng(seed, _STREAM_CHARACTER, int(index))
        drawers = sorted(characters[key]["drawers"])
        order = [drawers[i] for i in rng.permutation(len(drawers))]
        n_in_train = new_train if is_new else int(rng.integers(lo, hi + 1))
        n_in_test = new_test if is_new else n_test
        if total + n_in_train + n_in_test > max_images:
            break
        total += n_in_train + n_in_test
        chosen.append((key, is_new, sorted(order[:n_in_train]), sorted(order[n_in_train : n_in_train + n_in_test])))
    if not any(not is_new for _, is_new, _, _ in chosen):
        raise InputError(
            f"data.omniglot.max_images {max_images} leaves no known character (one needs up to {need_known} images)"
        )

    rows = []
    for key, is_new, train_drawers, test_drawers in sorted(chosen):
        info = characters[key]
        for split, drawers in (("train", train_drawers), ("test", test_drawers)):
            for drawer in drawers:
                rows.append(
                    (split, NEW_WHALE if is_new else key, key, info["alphabet"], drawer, info["drawers"][drawer])
                )
    names = unique_hex(_rng(seed, _STREAM_NAMES), len(rows), 9)
    images = [OmniglotImage(f"{name}.png", *row) for name, row in zip(names, rows)]
    return sorted(images, key=lambda image: image.name)


def sources_path(truth_path: str | os.PathLike) -> Path:
    truth_path = Path(truth_path)
    return truth_path.with_name(f"{truth_path.stem}_sources.csv")


def convert_omniglot(zip_path, out_root, truth_path, seed: int = 0, settings: dict | None = None) -> dict:
    """Write the Kaggle layout under `out_root` and the test identities at `truth_path` (which
    must lie outside `out_root`). Returns a JSON-safe summary of the split."""
    out_root, truth_path = Path(out_root).resolve(), Path(truth_path).resolve()
    if truth_path.is_relative_to(out_root):
        raise InputError(f"the test identities {truth_path} must lie outside the data root {out_root}")
    characters = read_archive(zip_path)
    cfg = resolve_settings(settings)
    plan = plan_split(characters, cfg, seed)

    for split in ("train", "test"):
        (out_root / split).mkdir(parents=True, exist_ok=True)
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    _copy_images(zip_path, out_root, plan)
    counts = _write_tables(out_root, truth_path, plan)
    return {
        "archive": str(Path(zip_path).resolve()),
        "seed": int(seed),
        "settings": cfg,
        "n_characters_in_archive": len(characters),
        **_split_counts(plan, counts),
    }


def _copy_images(zip_path, out_root: Path, plan: list[OmniglotImage]) -> None:
    """The planned images' archive bytes under their new names, and no other image of ours."""
    with zipfile.ZipFile(zip_path) as archive:
        for image in plan:
            write_bytes_atomic(out_root / image.split / image.name, archive.read(image.member))
    # Images of an earlier conversion into the same folder (only files named like ours).
    keep = {(image.split, image.name) for image in plan}
    for split in ("train", "test"):
        for path in (out_root / split).iterdir():
            if _NAME.match(path.name) and (split, path.name) not in keep:
                path.unlink()


def _write_tables(out_root: Path, truth_path: Path, plan: list[OmniglotImage]) -> Counter:
    """train.csv, sample_submission.csv, the test truth and the sources table; returns the known
    identities' training image counts."""
    train = [image for image in plan if image.split == "train"]
    test = [image for image in plan if image.split == "test"]
    write_csv_atomic(pd.DataFrame([(i.name, i.label) for i in train], columns=["Image", "Id"]), out_root / "train.csv")
    counts = Counter(i.label for i in train if i.label != NEW_WHALE)
    # Kaggle's placeholder: new_whale then the most frequent identities (the test truth stays outside).
    placeholder = " ".join([NEW_WHALE] + [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]])
    write_csv_atomic(
        pd.DataFrame({"Image": [i.name for i in test], "Id": placeholder}), out_root / "sample_submission.csv"
    )
    write_csv_atomic(pd.DataFrame([(i.name, i.label) for i in test], columns=["Image", "Id"]), truth_path)
    sources = [
        {
            "Image": i.name,
            "split": i.split,
            "Id": i.label,
            "character": i.character,
            "alphabet": i.alphabet,
            "drawer": i.drawer,
            "member": i.member,
        }
        for i in plan
    ]
    write_csv_atomic(pd.DataFrame(sources), sources_path(truth_path))
    return counts


def _split_counts(plan: list[OmniglotImage], counts: Counter) -> dict:
    """The summary's character and image counts of the split."""
    train = [image for image in plan if image.split == "train"]
    test = [image for image in plan if image.split == "test"]
    known = {i.character for i in plan if i.label != NEW_WHALE}
    new = {i.character for i in plan if i.label == NEW_WHALE}
    return {
        "n_characters_used": len(known | new),
        "n_known_characters": len(known),
        "n_new_characters": len(new),
        "n_train": len(train),
        "n_train_new_whale": sum(i.label == NEW_WHALE for i in train),
        "n_test": len(test),
        "n_test_known": sum(i.label != NEW_WHALE for i in test),
        "n_test_new_whale": sum(i.label == NEW_WHALE for i in test),
        "images_per_identity": {str(k): v for k, v in sorted(Counter(counts.values()).items())},
    }
