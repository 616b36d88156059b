"""The gallery manifest, gallery.json: reading it (paths made absolute) and writing it, the
manifest of a finished workflow run (the `gallery` rule) and a new empty gallery.

A gallery is a folder holding
- `gallery.json`: how a photo becomes embeddings (detector, alignment, each member's fold models
  and crop size) and how embeddings are matched (templates, ensemble weights, the new_whale
  threshold), with paths relative to the folder;
- `sightings.parquet`: confirmed sightings added by `add` (photo, id, one embedding per member,
  the key of the models that made it; see sightings.py).
The workflow's `gallery` rule writes `results/gallery/` from a finished run: paths into
results/ (models and embeddings stay where the run wrote them), the final ensemble's threshold,
and the run's training images as the base sightings. `flukeline gallery-new` starts an empty
gallery from an ImageNet-initialised backbone used untrained (any species, no detector, no
training, photos matched whole)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from flukeline.core.errors import InputError
from flukeline.core.io import write_json_atomic
from flukeline.detect.settings import ClassicalDetectSettings
from flukeline.match.cohort import SIMILARITY
from flukeline.match.settings import SearchSettings

log = logging.getLogger(__name__)

MANIFEST = "gallery.json"

FORMAT = 1


def relative_path(path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def write_manifest(folder, manifest: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    write_json_atomic({"format": FORMAT, **manifest}, path)
    return path


def read_manifest(folder) -> dict:
    """gallery.json of `folder` (or the file itself), with its paths made absolute."""
    path = Path(folder)
    path = path / MANIFEST if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise InputError(
            f"{path}: no gallery here; build one with `snakemake results/gallery/gallery.json` "
            f"(from a workflow run) or `flukeline gallery-new {path.parent}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not a gallery manifest ({error})") from error
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: gallery format {manifest.get('format')!r}, this Flukeline reads format {FORMAT}")
    root = path.parent.resolve()

    def absolute(p):
        return None if p is None else str((root / p).resolve())

    manifest["folder"] = str(root)
    manifest["train"] = absolute(manifest.get("train"))
    if manifest["detect"].get("model"):
        manifest["detect"]["model"] = absolute(manifest["detect"]["model"])
    if manifest.get("local"):
        manifest["local"]["train_features"] = absolute(manifest["local"]["train_features"])
    for member in manifest["members"]:
        member["models"] = [absolute(p) for p in member["models"]]
        member["embeddings"] = [absolute(p) for p in member.get("embeddings", [])]
    return manifest


def match_settings(manifest: dict) -> SearchSettings:
    """How the gallery searches (its `match` section: SearchSettings' keys, as match_member's). A
    gallery written before match.new_whale_score existed compared its threshold with the raw
    similarity, whatever today's default is."""
    return SearchSettings.from_dict({"new_whale_score": SIMILARITY, **manifest["match"]})


def manifest_from_run(
    out_dir,
    train,
    detect: dict,
    detect_model,
    align: dict,
    match: dict,
    members: list[dict],
    ensemble_summary,
    local: dict | None = None,
) -> Path:
    """gallery.json for a workflow run. members: {name, size, weight, models, embeddings} with
    one model and one embeddings table per fold; the threshold and the member weights are the final
    ensemble's (its summary.json: weights fitted on validation replace the configured ones).
    local: the local-feature member's settings and files (gallery/local_matching.py's local_section)."""
    from flukeline.gallery.local_matching import local_section

    out_dir = Path(out_dir)
    full = json.loads(Path(ensemble_summary).read_text())
    # The top-level weights and threshold are the embedding members' own fit (the ensemble records
    # it beside the fused one): what identify uses without the local matcher (--no-local), and
    # what calibrate-gallery recalibrates. The fused ensemble's are in the `local` section.
    summary = full.get("without_local") or full
    section = local_section(local, full, members) if local else None
    if section:
        section["train_features"] = relative_path(section["train_features"], out_dir)
    fitted = summary.get("members", {})
    manifest = {
        "source": "workflow run",
        "train": relative_path(train, out_dir),
        "detect": {**detect, "model": relative_path(detect_model, out_dir) if detect_model else None},
        "align": align,
        # The score the run's thresholds are compared with (a run before it was recorded: similarity).
        "match": {**match, "new_whale_score": full.get("new_whale_score", SIMILARITY)},
        "threshold": float(summary["threshold"]),
        "members": [
            {
                "name": m["name"],
                "size": m["size"],
                "weight": float(fitted.get(m["name"], m["weight"])),
                "models": [relative_path(p, out_dir) for p in m["models"]],
                "embeddings": [relative_path(p, out_dir) for p in m["embeddings"]],
            }
            for m in members
        ],
        **({"local": section} if section else {}),
    }
    return write_manifest(out_dir, manifest)


def new_gallery(out_dir, backbone: str, pretrained: str | None, size: str, threshold: float) -> Path:
    """An empty gallery whose one member is `backbone` with ImageNet (or local) weights and no
    training: the pooled features are the embedding. Photos are matched whole (no detector)."""
    from flukeline.embed.model import save_model
    from flukeline.embed.zero_shot import zero_shot_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The workflow's zero-shot member and baseline are this same model.
    model, meta = zero_shot_model(backbone, pretrained)
    model_path = out_dir / "model.safetensors"
    save_model(model, model_path, meta)
    return write_manifest(
        out_dir,
        {
            "source": f"{backbone} ({pretrained or 'random'} weights, untrained)",
            "train": None,
            "detect": {**ClassicalDetectSettings(method="none").to_dict(), "model": None},
            # No landmarks: each photo is its own box, letterboxed whole (aspect kept) into the size.
            "align": {"margin": 0.0},
            # Every sighting is a template: a few photos per individual, nothing to average away. No
            # flip fusion: marks are chiral and an untrained backbone was not taught that a mirrored
            # pattern is the same animal (manta-demo: 4 of 5 right at rank 1 without, 3 with).
            "match": {
                "templates": "images",
                "flip_fusion": False,
                "top_k": SearchSettings.top_k,
                "candidates": SearchSettings.candidates,
            },
            "threshold": float(threshold),
            "members": [
                {
                    "name": backbone,
                    "size": size,
                    "weight": 1.0,
                    "models": [relative_path(model_path, out_dir)],
                    "embeddings": [],
                }
            ],
        },
    )
