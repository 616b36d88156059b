"""Config rules the JSON schema cannot express: keys that must agree with other keys (a member's
size with align.sizes, the template with the detector's keypoints) or with the machine (weights
files, the Omniglot zip).

`workflow_problems(config, project_dir)` returns one line per problem; the workflow
(workflow/rules/common.smk) raises them all at once, after the schema check and its defaults.
Snakemake parses this on every run, so it imports the standard library and `offline_weights` only
(no torch).
"""

from __future__ import annotations

import os
from pathlib import Path

from .offline_weights import IMAGENET_SOURCES, timm_name


def omniglot_zip(config: dict, project_dir: str | os.PathLike) -> Path:
    """data.omniglot.zip as an absolute path. A relative path is relative to the project folder
    (the Snakefile's), not the working directory, so the default finds ../shared/data/ from any
    --directory."""
    return (Path(project_dir) / config["data"]["omniglot"]["zip"]).resolve()


def workflow_problems(config: dict, project_dir: str | os.PathLike) -> list[str]:
    """One line per problem of a schema-valid `config` (defaults filled in): members, detector
    weights, cv_folds, Omniglot, detection, in that order; empty when the workflow can run it.
    Relative weights files are looked up from the working directory, where the rules that read
    them run."""
    return [
        *_member_problems(config),
        *_detector_weights_problems(config),
        *_cv_fold_problems(config),
        *_baseline_problems(config),
        *_omniglot_problems(config, project_dir),
        *_detection_problems(config),
    ]


def _active_members(config: dict) -> dict[str, dict]:
    """The active members that embed.members defines (an undefined one is its own problem)."""
    members = config["embed"]["members"]
    return {name: members[name] for name in config["embed"]["active_members"] if name in members}


def _member_problems(config: dict) -> list[str]:
    embed = config["embed"]
    problems = []
    # Presets merge over config.yaml (dicts merge, lists replace): `members` is a catalogue that
    # presets extend, and the `active_members` list says which of them train.
    for name in embed["active_members"]:
        if name not in embed["members"]:
            problems.append(
                f"embed.active_members names {name!r}, which embed.members does not define ({sorted(embed['members'])})"
            )
        elif name == "ensemble":
            problems.append("embed.active_members: 'ensemble' is reserved for the match stage's combined result")
    active = _active_members(config)
    sizes = [list(size) for size in config["align"]["sizes"]]
    for name, member in active.items():
        if list(member["size"]) not in sizes:
            problems.append(
                f"embed.members.{name}.size {member['size']} is not one of align.sizes {config['align']['sizes']}"
            )
    for name, member in active.items():
        problems += _member_weights_problems(name, member, embed.get("pretrained", "none"))
    return problems


def _member_weights_problems(name: str, member: dict, shared_pretrained: str) -> list[str]:
    pretrained = member.get("pretrained", shared_pretrained)
    if member.get("type") in ("zero_shot", "frozen_head") and pretrained == "none":
        return [
            f"embed.members.{name}: a {member['type']} member uses its pretrained features as they are; "
            f"pretrained none would embed noise (use imagenet, hub or a local weights file)"
        ]
    if pretrained == "imagenet" and timm_name(member["backbone"]) not in IMAGENET_SOURCES:
        return [
            f"embed.members.{name}: pretrained imagenet is available offline for {sorted(IMAGENET_SOURCES)},"
            f" not {member['backbone']}; use one of them, pretrained: hub (internet), a local weights file"
            + ("" if member.get("type") in ("zero_shot", "frozen_head") else ", or none")
        ]
    if pretrained not in ("imagenet", "none", "hub") and not Path(pretrained).is_file():
        return [f"embed.members.{name}: pretrained weights file {pretrained} does not exist"]
    return []


def _detector_weights_problems(config: dict) -> list[str]:
    if config["detect"]["method"] != "learned":
        return []  # only the learned detector has an encoder
    weights = config["detect"]["model"].get("encoder_weights")
    encoder = config["detect"]["model"]["encoder"]
    if weights == "imagenet":
        # The offline weights are timm models: smp's own encoders (resnet34, ...) would download.
        if not encoder.startswith("tu-") or timm_name(encoder) not in IMAGENET_SOURCES:
            return [
                "detect.model.encoder_weights: imagenet is available offline for"
                f" tu-{', tu-'.join(sorted(IMAGENET_SOURCES))},"
                f" not {encoder}; use one of them, hub (internet), a local weights file, or null"
            ]
    elif weights not in (None, "hub") and not Path(weights).is_file():
        return [f"detect.model.encoder_weights: weights file {weights} does not exist"]
    return []


def _baseline_problems(config: dict) -> list[str]:
    """The zero-shot baseline's backbone follows the members' weights rules."""
    zero_shot = config.get("baselines", {}).get("zero_shot", {})
    if not zero_shot:
        return []
    member = {"backbone": zero_shot["backbone"], "pretrained": zero_shot["pretrained"], "type": "zero_shot"}
    return [
        p.replace("embed.members.baselines.zero_shot", "baselines.zero_shot")
        for p in _member_weights_problems("baselines.zero_shot", member, "imagenet")
    ]


def _cv_fold_problems(config: dict) -> list[str]:
    folds = config["data"]["folds"]
    too_high = [fold for fold in config["embed"]["cv_folds"] if fold >= folds]
    return [f"embed.cv_folds contains {fold}, but data.folds is {folds}" for fold in too_high]


def _omniglot_problems(config: dict, project_dir: str | os.PathLike) -> list[str]:
    if config["data"]["source"] != "omniglot":
        return []
    omniglot = config["data"]["omniglot"]
    problems = []
    zip_path = omniglot_zip(config, project_dir)
    if not zip_path.is_file():
        problems.append(
            f"data.omniglot.zip {omniglot['zip']!r} is not a file ({zip_path}; a relative path is"
            f" relative to the project folder {project_dir})"
        )
    low, high = omniglot["train_drawers"]
    if low > high:
        problems.append(f"data.omniglot.train_drawers {omniglot['train_drawers']} must be [lo, hi] with lo <= hi")
    return problems


def _has_training_annotations(config: dict) -> bool:
    """Whether the data has the mask, keypoint or box annotations the learned detector trains on:
    the demo renders all of them, Omniglot has none, Kaggle-layout data has those data.annotations
    names (boxes alone train it too: flukeline.detect.train)."""
    source = config["data"]["source"]
    if source == "demo":
        return True
    if source == "omniglot":
        return False
    annotations = config["data"]["annotations"]
    return bool(annotations.get("masks") or annotations.get("keypoints") or annotations.get("boxes"))


def _detection_problems(config: dict) -> list[str]:
    if config["detect"]["method"] != "learned":
        return []
    problems = []
    if config["data"]["source"] == "omniglot":
        problems.append(
            "detect.method learned trains on annotations, and data.source omniglot has none;"
            " set detect.method: none (the whole image, as workflow/presets/omniglot.yaml does) or threshold"
        )
    elif not _has_training_annotations(config):
        problems.append(
            "detect.method learned trains on mask, keypoint or box annotations, and data.annotations names none;"
            " add them (flukeline annotate makes them), or set detect.method: none (the whole photo)"
        )
    template, keypoints = config["align"]["template"], config["detect"]["keypoints"]
    shared = set(template) & set(keypoints)
    if len(shared) < config["align"].get("min_landmarks", 3):
        problems.append(
            f"align.template names {sorted(template)} share only {sorted(shared)} with"
            f" detect.keypoints {keypoints}: too few to align on (align.min_landmarks)"
        )
    return problems
