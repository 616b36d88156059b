"""Whether a model is trained again when its rule reruns (`detect.model.retrain`, `embed.retrain`):
the trained files are kept in a store beside the per-photo caches (results/cache/models/...) with
the settings that made them and the list of their training items (a photo's or crop's SHA-1 with
its label and fold), and a rerun with the same settings may put them back instead of training.

- `always`: train (the behaviour before stores existed);
- `when-train-changes` (default): train when no stored model has these settings, or when more than
  `retrain_above` of the training items were added, removed or changed since it was trained;
- `never`: reuse a stored model of these settings whatever the data (train only when none exists).

A reused model is the same file, byte for byte, so the per-photo caches keyed by the model's SHA-1
(detections, embeddings) hit for every photo seen before: a new season's photos are the only ones
detected and embedded. The change is measured as |old △ new| / |old ∪ new| over the items (the
Jaccard distance); why 0.1 is the default bound: see the settings classes and README.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from flukeline.core.errors import InputError

log = logging.getLogger(__name__)

RETRAIN_POLICIES = ("always", "when-train-changes", "never")
DEFAULT_RETRAIN = "when-train-changes"
DEFAULT_RETRAIN_ABOVE = 0.1

_MANIFEST = "manifest.json"

# The settings that decide whether to train, not what is trained: never part of a model's key or file.
REUSE_KEYS = ("retrain", "retrain_above")


def without_reuse_keys(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key not in REUSE_KEYS}


def settings_key(*parts) -> str:
    """A model's settings as its store compares them (JSON, keys sorted)."""
    return json.dumps(parts, sort_keys=True, default=str)


def check_policy(policy: str, above: float) -> None:
    if policy not in RETRAIN_POLICIES:
        raise InputError(f"retrain: {policy!r} is not one of {', '.join(RETRAIN_POLICIES)}")
    if not 0.0 <= float(above) <= 1.0:
        raise InputError(f"retrain_above: {above!r} must lie in [0, 1] (a share of the training items)")


def training_change(before: Collection[str], now: Collection[str]) -> float:
    """Share of the training items added, removed or changed: |before △ now| / |before ∪ now|."""
    before, now = set(before), set(now)
    union = before | now
    return len(before ^ now) / len(union) if union else 0.0


def reuse_or_train(
    store: Path | str | None,
    settings_key: str,
    items: Sequence[str],
    policy: str,
    above: float,
    outputs: Sequence[Path | str],
    train: Callable[[], None],
) -> dict:
    """Put the stored model's files in `outputs` when `policy` allows, else `train()` (which writes
    `outputs`) and store them. `store` None: always train, keep nothing. Returns what happened:
    {"reused": bool, "change": share or None, "reason": text} (also logged)."""
    from flukeline.core.io import write_atomic  # here: the settings classes import this module at parse time

    check_policy(policy, above)
    outputs = [Path(path) for path in outputs]
    decision = _decide(Path(store) if store else None, settings_key, items, policy, above, outputs)
    log.info("model %s: %s", outputs[0], decision["reason"])
    if decision["reused"]:
        for stored, out in zip(_stored_files(Path(store), outputs), outputs):
            write_atomic(out, lambda tmp, stored=stored: shutil.copyfile(stored, tmp))
        return decision
    train()
    if store:
        _store(Path(store), settings_key, items, outputs)
    return decision


def _decide(store, settings_key, items, policy, above, outputs) -> dict:
    if store is None:
        return {"reused": False, "change": None, "reason": "trained (no model store)"}
    manifest = _manifest(store)
    if manifest is None or not all(path.is_file() for path in _stored_files(store, outputs)):
        return {"reused": False, "change": None, "reason": "trained (none stored yet)"}
    if manifest.get("settings") != settings_key:
        return {"reused": False, "change": None, "reason": "trained (the stored model had other settings)"}
    change = training_change(manifest.get("items", []), items)
    described = f"{change:.1%} of the training items changed since the stored model was trained"
    if policy == "always":
        return {"reused": False, "change": change, "reason": f"trained (retrain: always; {described})"}
    if policy == "never" or change <= above:
        why = "retrain: never" if policy == "never" else f"at most retrain_above {above:g}"
        return {"reused": True, "change": change, "reason": f"reused the stored model ({described}; {why})"}
    return {"reused": False, "change": change, "reason": f"trained ({described}, above retrain_above {above:g})"}


def _manifest(store: Path) -> dict | None:
    try:
        return json.loads((store / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _stored_files(store: Path, outputs: Sequence[Path]) -> list[Path]:
    return [store / f"{index}_{path.name}" for index, path in enumerate(outputs)]


def _store(store: Path, settings_key: str, items: Sequence[str], outputs: Sequence[Path]) -> None:
    from flukeline.core.io import write_atomic, write_json_atomic

    store.mkdir(parents=True, exist_ok=True)
    (store / _MANIFEST).unlink(missing_ok=True)  # files and manifest never disagree: manifest last
    for out, stored in zip(outputs, _stored_files(store, outputs)):
        write_atomic(stored, lambda tmp, out=out: shutil.copyfile(out, tmp))
    write_json_atomic({"settings": settings_key, "items": sorted(items), "n_items": len(items)}, store / _MANIFEST)
