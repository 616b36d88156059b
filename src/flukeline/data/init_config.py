"""`flukeline init`'s suggestions from a folder's summary (folder_report), and the config file it
writes: the chosen preset merged with the data keys, one file that runs as it is
(`snakemake --cores 2 --configfile <it>`).

What can be told from the photos alone is their shape, their number and whether annotations
exist; the species cannot. So the preset is chosen by the photos' shape (each preset's crop
matches a shape: square faces, 3:2 fins, 2:1 side-on bodies) with the reason printed, and the
user who knows better picks another preset by name."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from flukeline.core.metrics import NEW_WHALE

# The project folder's workflow/ (presets, schema), where the package runs from a checkout.
WORKFLOW_DIR = Path(__file__).resolve().parents[3] / "workflow"
# Below this many training photos a detector has too little to learn from (README: 100 annotated
# photos gave PCK@0.1 0.86 on the demo, as a floor).
MIN_PHOTOS_FOR_ANNOTATIONS = 100
# Measured on the demo (README "Local-feature member", 2026-12-07, seed 0): the ensemble's test
# MAP@5 with detect.method none against the annotated default (learned detector, aligned crops).
DEMO_GAIN = "on the demo, annotations took test MAP@5 from 0.781 (whole photos) to 0.921 (learned detector)"


def usable_annotations(summary: dict) -> dict:
    """The annotations config.yaml's recipe can use, as data.annotations takes them: masks and boxes
    as found, keypoints when config.yaml's align.template places every name (else its fit would
    have no frame to map them to)."""
    found = summary["annotations"]
    usable = {kind: found[kind] for kind in ("masks", "boxes") if kind in found}
    template = _read_yaml(WORKFLOW_DIR.parent / "config.yaml")["align"]["template"]
    if "keypoints" in found and set(found["keypoint_names"]) <= set(template):
        usable["keypoints"] = found["keypoints"]
    return usable


def choose_preset(summary: dict) -> tuple[str | None, str]:
    """(preset name or None for config.yaml's own fluke recipe, the reason)."""
    if usable_annotations(summary):
        return None, "annotations found: config.yaml's recipe (learned detector, landmark-aligned crops)"
    aspect = summary["sizes"].get("median_aspect", 1.0)
    if aspect < 1.25:
        return "face", f"photos about square (median width/height {aspect}): square 224x224 crops (face.yaml)"
    if aspect < 1.7:
        return "fin", f"photos about 3:2 (median width/height {aspect}): 192x128 crops (fin.yaml)"
    return "body", f"wide photos (median width/height {aspect}): 2:1 256x128 crops of a side-on animal (body.yaml)"


def suggestions(summary: dict, preset: str | None, preset_reason: str) -> list[str]:
    """Lines of advice, each with its reason."""
    lines = [f"preset: {preset + '.yaml' if preset else 'none (config.yaml)'}: {preset_reason}"]
    method = _detect_method(preset)
    lines.append(f"detect.method: {method}: " + _detect_reason(method))
    sizes = summary["sizes"]
    crop_height = (_preset(preset) if preset else _read_yaml(WORKFLOW_DIR.parent / "config.yaml"))["align"]["sizes"][0][
        1
    ]
    if sizes and sizes["min_side"] < crop_height:
        lines.append(
            f"sizes: the smallest photo side is {sizes['min_side']} px, under the crops' {crop_height}:"
            " those photos are upscaled and carry little detail"
        )
    found, usable = summary["annotations"], usable_annotations(summary)
    if usable:
        lines.append(f"annotations: {', '.join(usable)} found and used")
        if "keypoints" in found and "keypoints" not in usable:
            lines.append(
                f"annotations: keypoints {found['keypoint_names']} are not all in config.yaml's align.template:"
                " add their positions there to use them"
            )
    elif summary["train_photos"] < MIN_PHOTOS_FOR_ANNOTATIONS:
        lines.append(
            f"annotations: not yet: {summary['train_photos']} training photos are too few to train a detector"
            f" (at least {MIN_PHOTOS_FOR_ANNOTATIONS}); run without and collect photos"
        )
    else:
        lines.append(
            "annotations: likely to pay: annotate 100-200 photos with `flukeline annotate` (README, Your own data,"
            f" step 2) and use the learned detector; {DEMO_GAIN}"
        )
    single = summary["photos_per_identity"]["1"]
    if summary["identities"] and single / summary["identities"] > 0.5:
        lines.append(
            f"identities: {single} of {summary['identities']} have one photo: they can be matched but not validated;"
            " more photos per individual make the validation scores meaningful"
        )
    if summary["unknown_label"] != NEW_WHALE:
        lines.append(f"data.new_label: {summary['unknown_label']}: train.csv calls unknown animals so")
    if summary["test_photos"] == 0:
        lines.append(f"test: no test photos: put the photos to identify in {summary['root']}/test/ before running")
    if summary["duplicates"]["groups"]:
        lines.append(
            "duplicates: ingest lists them in results/data/duplicates.csv (data.group_duplicate_ids merges ids)"
        )
    if summary["unreadable"] or summary["missing_train_photos"]:
        lines.append("problems: fix the photos listed above, or set data.on_bad_image: skip to leave them out")
    return lines


def _detect_method(preset: str | None) -> str:
    return "learned" if preset is None else _preset(preset)["detect"]["method"]


def _detect_reason(method: str) -> str:
    return {
        "learned": "a detector trained on the annotations finds the animal and its landmarks",
        "none": "no annotations: the whole photo is the box (README, Your own data, step 1)",
        "threshold": "the classical detector of a dark shape against water; set none if the animal fills the photos",
    }[method]


def config_for(summary: dict, preset: str | None) -> dict:
    """The whole config: the preset's keys with the data ones (root, folds, new_label, annotations)
    over them."""
    config = copy.deepcopy(_preset(preset)) if preset else {}
    data = config.setdefault("data", {})
    data.update({"source": "kaggle", "root": summary["root"]})
    # Folds are dealt by identity; validation needs identities with 2+ photos in every fold.
    data["folds"] = max(2, min(4, summary["identities_with_2_or_more"]))
    if summary["unknown_label"] != NEW_WHALE:
        data["new_label"] = summary["unknown_label"]
    if preset is None:
        annotations = usable_annotations(summary)
        data["annotations"] = {"masks": None, "keypoints": None, "boxes": None, **annotations}
        if "keypoints" in annotations:
            config.setdefault("detect", {})["keypoints"] = summary["annotations"]["keypoint_names"]
    return config


def config_text(config: dict, header: list[str]) -> str:
    return "".join(f"# {line}\n" for line in header) + yaml.safe_dump(config, sort_keys=False)


def _preset(name: str) -> dict:
    return _read_yaml(WORKFLOW_DIR / "presets" / f"{name}.yaml")


def _read_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}
