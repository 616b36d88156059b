"""How well the share of new individuals among the photos being matched is estimated (issue 30: within
±0.08 of the truth), by each estimator, on finished runs' tables, without training or matching again.

For each finished workflow folder given, the final ensemble's validation and test top-k tables are
read as they are and the test photos are subsampled (known or new photos dropped, seeded, as
bench/bench_new_share.py does) to test new shares of 10%, 25%, 50% and 70%, beside the test as
generated. Every estimator is EM re-estimation of the class prior (match/new_share.py's
em_new_share) on a posterior P(new individual | evidence) fitted on the validation photos; they
differ in the evidence and the model:

- before: the decisions' monotone model (isotonic on the logistic direction of the top score and
  the margin: decision_calibration.fit_calibrator), the estimator before issue 30;
- now: a logistic model (signed direction, Platt scaling) of the top identity's lift over its
  cohort and the margin (new_share.fit_new_model: what match/new_share.py runs);
- and the two halves apart: the logistic model on the top score and margin, and the isotonic one
  on the lift and margin.

Per share: each estimator's mean error (estimate minus the true share, over the seeds) and its
worst |error|; for before and now, how often the 90% bootstrap interval holds the true share (over
--interval-seeds subsamples, as the workflow computes it: 200 replicates).

    .venv/bin/python -m bench.bench_new_share_estimate RUN_DIR [RUN_DIR ...] [--seeds 10]
        [--interval-seeds 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.bench_new_share import SHARES, subsample
from bench.bench_peers import truth_file
from bench.common import environment, markdown_table, write_part
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.decision_calibration import FEATURES, fit_calibrator
from flukeline.match.new_share import SHARE_FEATURES, bootstrap_share, em_new_share, fit_new_model, share_evidence

ISSUE_TOLERANCE = 0.08


class Renamed:
    """A model fitted on `features` under the names it reads (`names`), predicting the same way."""

    def __init__(self, model, features, names):
        self.model, self.names = model, dict(zip(features, names))

    def predict(self, evidence: pd.DataFrame) -> np.ndarray:
        return self.model.predict(evidence[list(self.names)].rename(columns=self.names))


def isotonic(features):
    def fit(evidence: pd.DataFrame, is_new: np.ndarray):
        table = evidence[[*features, "size"]].rename(columns=dict(zip(features, FEATURES)))
        return Renamed(fit_calibrator(table, is_new.astype(float), increasing=False), features, FEATURES)

    return fit


def logistic(features):
    def fit(evidence: pd.DataFrame, is_new: np.ndarray):
        table = evidence[[*features, "size"]].rename(columns=dict(zip(features, SHARE_FEATURES)))
        return Renamed(fit_new_model(table, is_new), features, SHARE_FEATURES)

    return fit


# name: fit(validation evidence, is_new) -> a model with predict(evidence)
ESTIMATORS = {
    "before": isotonic(("top_score", "margin")),
    "now": logistic(("lift", "margin")),
    "logistic, top score": logistic(("top_score", "margin")),
    "isotonic, lift": isotonic(("lift", "margin")),
}
WITH_INTERVAL = ("before", "now")


class Run:
    """A finished run's final ensemble evidence, validation truth and test truth."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.ensemble = sorted((folder / "results" / "match").glob("round*/ensemble"))[-1]
        self.val = share_evidence(pd.read_parquet(self.ensemble / "val_topk.parquet"))
        self.test = share_evidence(pd.read_parquet(self.ensemble / "test_topk.parquet"))
        truth = pd.read_csv(truth_file(folder), dtype=str, keep_default_na=False).set_index("Image")["Id"]
        self.val_new = (self.val["truth"].astype(str) == NEW_WHALE).to_numpy()
        self.test_new = truth.reindex(self.test["unit"]).to_numpy() == NEW_WHALE

    def error(self, name: str, rows: np.ndarray) -> float:
        model = ESTIMATORS[name](self.val, self.val_new)
        share = em_new_share(model.predict(self.test.iloc[rows]), float(self.val_new.mean()))
        return share - float(self.test_new[rows].mean())

    def holds_truth(self, name: str, rows: np.ndarray, seed: int) -> bool:
        estimate = bootstrap_share(self.val, self.val_new, self.test.iloc[rows], ESTIMATORS[name], name, seed=seed)
        return bool(estimate.low <= float(self.test_new[rows].mean()) <= estimate.high)


def bench_run(folder: Path, shares, seeds: int, interval_seeds: int) -> dict:
    run = Run(folder)
    everything = np.arange(len(run.test))
    samples = {"as generated": [everything]}
    for share in shares:
        samples[f"{share:.2f}"] = [subsample(run.test_new, share, np.random.default_rng(s)) for s in range(seeds)]
    result = {
        "run": str(folder),
        "validation_photos": len(run.val),
        "validation_new": int(run.val_new.sum()),
        "test_photos": len(run.test),
        "test_share": float(run.test_new.mean()),
        "shares": {},
    }
    for label, rows_list in samples.items():
        entry = {"true_share": float(np.mean([run.test_new[r].mean() for r in rows_list])), "photos": len(rows_list[0])}
        for name in ESTIMATORS:
            errors = [run.error(name, rows) for rows in rows_list]
            entry[name] = {"mean_error": float(np.mean(errors)), "worst_abs_error": float(np.max(np.abs(errors)))}
        for name in WITH_INTERVAL:
            held = [run.holds_truth(name, rows, seed) for seed, rows in enumerate(rows_list[:interval_seeds])]
            entry[name]["interval_holds_truth"] = float(np.mean(held))
            entry[name]["interval_samples"] = len(held)
        result["shares"][label] = entry
    return result


def tables(results: list[dict], command: str, env: dict, seeds: int, interval_seeds: int) -> str:
    names = list(ESTIMATORS)
    lines = [
        "# The estimated share of new individuals among the photos being matched (issue 30)",
        "",
        f"{env['date']}, commit {env['git_commit']}, {env['cpu']}; `{command}`",
        "",
        "Each run's final ensemble tables as they are; test photos subsampled (known or new dropped,"
        f" seeded, {seeds} seeds) to each new share. EM on P(new) fitted on validation:"
        " before = isotonic on (top score, margin) (the estimator before issue 30); now = logistic on"
        " (lift over the cohort, margin) (match/new_share.py); and each change alone. Cells: mean error"
        " (estimate minus truth) / worst |error| over the seeds; interval = share of subsamples"
        f" (the first {interval_seeds} seeds) whose 90% bootstrap interval holds the truth.",
        "",
        f"## Worst |error| over every share and seed (issue target: {ISSUE_TOLERANCE})",
        "",
    ]
    header = ["estimator"] + [Path(r["run"]).name for r in results]
    rows = []
    for name in names:
        rows.append([name] + [max(s[name]["worst_abs_error"] for s in r["shares"].values()) for r in results])
    lines += [markdown_table(header, rows), ""]
    for result in results:
        lines += [
            f"## {result['run']}",
            "",
            f"validation {result['validation_photos']} photos, {result['validation_new']} new; test"
            f" {result['test_photos']} photos, new share {result['test_share']:.3f}",
            "",
        ]
        header = ["test share", "photos", *names, *[f"interval {n}" for n in WITH_INTERVAL]]
        rows = []
        for label, s in result["shares"].items():
            rows.append(
                [f"{label} ({s['true_share']:.3f})", s["photos"]]
                + [f"{s[n]['mean_error']:+.3f} / {s[n]['worst_abs_error']:.3f}" for n in names]
                + [f"{s[n]['interval_holds_truth']:.0%} of {s[n]['interval_samples']}" for n in WITH_INTERVAL]
            )
        lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished workflow folders (demo, Omniglot)")
    parser.add_argument("--shares", nargs="+", type=float, default=list(SHARES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--interval-seeds", type=int, default=3, help="subsamples per share given a bootstrap interval")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    command = "python -m bench.bench_new_share_estimate " + shlex.join(sys.argv[1:] if argv is None else argv)
    env = environment()
    started = time.perf_counter()
    results = [bench_run(folder, args.shares, args.seeds, args.interval_seeds) for folder in args.runs]
    result = {"command": command, "environment": env, "seconds": time.perf_counter() - started, "runs": results}
    text = tables(results, command, env, args.seeds, args.interval_seeds)
    write_part(args.out, "new_share_estimate", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
