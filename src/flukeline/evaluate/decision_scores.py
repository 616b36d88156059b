"""The decisions scored against the test identities, where a run knows them (the demo, Omniglot):
per class (match, new, review) the share of test photos and the precision of the automatic ones,
beside the validation's (the `decision_scores` rule, results/decisions/test_scores.json). The
`decide` rule that made the decisions never reads the truth; this evaluate-stage module does,
like evaluate/scores.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_json_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.decisions import CLASS_LABELS, CLASSES, MATCH, NEW

log = logging.getLogger(__name__)


def score_decisions(decisions: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per class: photos, share and (match, new) precision against `truth` (Image, Id; new_whale
    = a new individual). A match is right when its Id is the photo's; a new decision when the
    photo's truth is new_whale. The review class also reports how many of its photos the top
    candidate would have got right (what a reviewer confirms rather than corrects)."""
    merged = decisions.merge(truth.rename(columns={"Id": "truth"}), on="Image", how="left")
    unknown = merged.loc[merged["truth"].isna(), "Image"].tolist()
    if unknown:
        raise InputError(f"test truth: no identity for {len(unknown)} decided photo(s), e.g. {unknown[:3]}")
    truth_id = merged["truth"].astype(str).to_numpy()
    decision = merged["decision"].to_numpy()
    right = {
        MATCH: (merged["Id"].astype(str).to_numpy() == truth_id) & (truth_id != NEW_WHALE),
        NEW: truth_id == NEW_WHALE,
    }
    classes = {}
    for name in CLASSES:
        inside = decision == name
        entry = {"label": CLASS_LABELS[name], "photos": int(inside.sum()), "share": float(inside.mean())}
        if name in right:
            entry["precision"] = float(right[name][inside].mean()) if inside.any() else None
        else:
            candidate_right = (merged["candidate"].astype(str).to_numpy() == truth_id) & (truth_id != NEW_WHALE)
            entry["top_candidate_right"] = float(candidate_right[inside].mean()) if inside.any() else None
            entry["new_individuals"] = float((truth_id[inside] == NEW_WHALE).mean()) if inside.any() else None
        classes[name] = entry
    return {"photos": len(merged), "new_individual_share": float(np.mean(truth_id == NEW_WHALE)), "classes": classes}


def run_decision_scores(decisions_path, summary_path, truth_path, *, out) -> dict:
    """results/decisions/test_scores.json: the validation figures of the decisions' summary beside
    the same figures against the test truth."""
    decisions = pd.read_csv(decisions_path, dtype=str, keep_default_na=False)
    for column in ("Image", "decision", "Id", "candidate"):
        if column not in decisions:
            raise InputError(f"{decisions_path}: missing column {column!r} (is it the decide rule's decisions.csv?)")
    truth = pd.read_csv(truth_path, dtype=str, keep_default_na=False)
    if not {"Image", "Id"} <= set(truth.columns):
        raise InputError(f"{truth_path}: needs columns Image,Id")
    summary = json.loads(Path(summary_path).read_text())
    scores = {
        "operating_points": summary.get("operating_points"),
        "validation": summary.get("validation"),
        "test": score_decisions(decisions, truth),
    }
    write_json_atomic(scores, out)
    log.info("decisions against the test truth: %s", json.dumps(scores["test"]["classes"]))
    return scores
