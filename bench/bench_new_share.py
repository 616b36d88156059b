"""The new-individual decision when the test's share of new individuals differs from validation's
(issue 30), measured on finished runs without training anything again.

For each finished workflow folder given (the demo default, the demo with detect.method none, an
Omniglot run, ...), the final ensemble's validation and test top-k tables are kept as they are and
the test photos are subsampled (known or new photos dropped, seeded) to test new shares of 10%,
25%, 50% and 70%, beside the test as generated. Per share (mean over the seeds):

- the estimated share (match/new_share.py: EM on validation-calibrated P(new), and how often its
  bootstrap interval holds the truth) against the true share;
- MAP@5 at the validation-calibrated threshold (match.new_share: validation), at the estimated
  share's threshold (auto), at the true share's threshold (the best any share estimate can do) and
  at the best threshold in hindsight (chosen on the subsample's own truth), and the all-new_whale
  baseline (every list only new_whale: MAP@5 = the new share); each with the threshold compared
  with the raw similarity and with the lift over the photo's cohort (match.new_whale_score);
- AUROC of new vs known on the calibrated P(new) and on the top score;
- what the evidence and the sample size allow, to read the two targets against
  (crossfit_hindsight_map5, share_error_floor): MAP@5 at a threshold chosen on half the
  subsample's own truth and scored on the other half (the hindsight threshold without its fit to
  the photos it is scored on), and the error a maximum-likelihood share estimate has at best, with
  P(new) fitted on the test photos' own truth;
- the automatic "new individual" decisions (match/decisions.py at its default 0.95 target, for the
  share used): the share of photos decided new, their precision, and the share of the truly new
  photos decided new.

    .venv/bin/python -m bench.bench_new_share RUN_DIR [RUN_DIR ...] [--seeds 5] [--out bench/results]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench.bench_peers import truth_file
from bench.common import environment, markdown_table, write_part
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import best_threshold, map5_by_threshold, threshold_grid
from flukeline.match.cohort import LIFT, SIMILARITY, threshold_offsets
from flukeline.match.decision_calibration import fit_calibrator, photo_evidence
from flukeline.match.decisions import NEW, decide
from flukeline.match.new_share import adjust_to_prior, estimate_new_share, fit_new_model, share_evidence
from flukeline.match.new_whale_threshold import decide_threshold
from flukeline.match.settings import DecisionSettings, EnsembleSettings
from flukeline.match.tables import to_wide

SHARES = (0.10, 0.25, 0.50, 0.70)
SCORES = (SIMILARITY, LIFT)
CROSSFIT_REPEATS = 5  # random halvings averaged per subsample


def share_error_floor(p_new: np.ndarray, share: float) -> float:
    """The standard deviation of (maximum-likelihood share - the photos' true share) when every
    photo's P(new | evidence) is `p_new` (exact, at the mixture's share `share`), to first order.

    The share's Fisher information per photo is I = E[(p / share - (1 - p) / (1 - share))^2], so
    the estimate's own spread is 1 / (n I) (Cramér-Rao); the photos' realised share varies around
    `share` by share (1 - share) / n, and the estimate follows it by exactly that covariance, which
    leaves 1 / (n I) - share (1 - share) / n for the error against the realised share. EM on
    fixed posteriors is that maximum-likelihood estimate; a posterior fitted on validation only
    adds to it."""
    p = np.clip(np.asarray(p_new, dtype=np.float64), 1e-6, 1 - 1e-6)
    n = len(p)
    if n == 0 or not 0 < share < 1:
        return float("nan")
    information = float(np.mean((p / share - (1 - p) / (1 - share)) ** 2))
    return float(np.sqrt(max(1 / (n * information) - share * (1 - share) / n, 0.0)))


def crossfit_hindsight_map5(truth, ids, sims, grid, k: int, rng: np.random.Generator, repeats: int = CROSSFIT_REPEATS):
    """MAP@k with the hindsight threshold cross-fitted: the photos halved at random, each half
    scored at the best threshold on the other half's truth, averaged over `repeats` halvings.
    In-sample hindsight is fitted to the very photos it scores (on 97 photos a threshold that
    happens to order them well); this is what a threshold chosen from half as many labelled test
    photos does on photos it has not seen, so it errs low where in-sample hindsight errs high."""
    truth, ids, sims = np.asarray(truth), np.asarray(ids), np.asarray(sims)
    n = len(truth)
    total = 0.0
    for _ in range(repeats):
        order = rng.permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        for chosen_on, scored_on in (halves, halves[::-1]):
            threshold, _, _ = best_threshold(truth[chosen_on], ids[chosen_on], sims[chosen_on], grid, k)
            score = map5_by_threshold(truth[scored_on], ids[scored_on], sims[scored_on], [threshold], k)[0]
            total += score * len(scored_on)
    return total / (repeats * n)


def subsample(is_new: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the largest subsample with the given new share: every photo of the scarcer side
    kept, the other side drawn without replacement."""
    new, known = np.flatnonzero(is_new), np.flatnonzero(~is_new)
    if share * len(known) / (1 - share) <= len(new):
        n_new, n_known = int(round(share * len(known) / (1 - share))), len(known)
    else:
        n_new, n_known = len(new), int(round(len(new) * (1 - share) / share))
    return np.sort(np.r_[rng.choice(new, n_new, replace=False), rng.choice(known, n_known, replace=False)])


class Run:
    """A finished run's final ensemble tables, test truth and tables for the decisions."""

    def __init__(self, folder: Path):
        self.folder = folder
        ensembles = sorted((folder / "results" / "match").glob("round*/ensemble"))
        self.ensemble = ensembles[-1]
        self.val_topk = pd.read_parquet(self.ensemble / "val_topk.parquet")
        self.test_topk = pd.read_parquet(self.ensemble / "test_topk.parquet")
        self.train = pd.read_parquet(folder / "results" / "data" / "train.parquet")
        self.test = pd.read_parquet(folder / "results" / "data" / "test.parquet")
        truth = pd.read_csv(truth_file(folder), dtype=str, keep_default_na=False).set_index("Image")["Id"]
        self.settings = {score: EnsembleSettings(new_whale_score=score) for score in SCORES}
        self.k = int(EnsembleSettings().top_k)
        self.images, self.ids, self.sims = to_wide(self.test_topk, self.k)
        # What each score compares with the threshold.
        self.scores = {s: self.sims - threshold_offsets(self.test_topk, self.images, s)[:, None] for s in SCORES}
        self.truth = truth.loc[self.images].to_numpy()
        self.is_new = self.truth == NEW_WHALE
        self.grid = threshold_grid(EnsembleSettings().threshold_grid)
        self.threshold_validation = {s: decide_threshold(self.val_topk, self.settings[s])[0] for s in SCORES}
        val = photo_evidence(self.val_topk)
        val_new = (val["truth"].astype(str) == NEW_WHALE).to_numpy()
        self.validation_share = float(val_new.mean())
        # photo_evidence with the lift beside it: the decisions' calibrator reads its own columns.
        test = share_evidence(self.test_topk).set_index("unit").loc[self.images]
        self.p_new = fit_calibrator(val, val_new.astype(float), increasing=False).predict(test)
        self.top_score = test["top_score"].to_numpy()
        # The best P(new) the evidence allows: the share model fitted on the test photos' own truth.
        self.oracle_p_new = fit_new_model(test, self.is_new).predict(test)

    def map5(self, rows: np.ndarray, threshold: float, score: str) -> float:
        sims = self.scores[score][rows]
        return float(map5_by_threshold(self.truth[rows], self.ids[rows], sims, [threshold], self.k)[0])

    def measure(self, rows: np.ndarray, seed: int) -> dict:
        """Every figure of one subsample."""
        images = set(self.images[rows])
        test_topk = self.test_topk[self.test_topk["image"].isin(images)]
        estimate = estimate_new_share(self.val_topk, test_topk, seed=seed)
        true_share = float(self.is_new[rows].mean())
        is_new = self.is_new[rows]
        both = 0 < is_new.mean() < 1
        out = {
            "photos": len(rows),
            "true_share": true_share,
            "estimated_share": estimate.estimate,
            "interval": [estimate.low, estimate.high],
            "interval_holds_truth": bool(estimate.low <= true_share <= estimate.high),
            "map5_all_new_whale": true_share,
            "thresholds": {},
            "auroc_p_new": float(roc_auc_score(is_new, self.p_new[rows])) if both else None,
            "auroc_top_score": float(roc_auc_score(is_new, -self.top_score[rows])) if both else None,
            "share_error_floor": share_error_floor(
                adjust_to_prior(self.oracle_p_new[rows], float(self.is_new.mean()), true_share), true_share
            ),
        }
        for score in SCORES:
            settings = self.settings[score]
            threshold_estimated, _ = decide_threshold(self.val_topk, settings, estimate.estimate)
            threshold_true, _ = decide_threshold(self.val_topk, settings, true_share)
            truth, ids, sims = self.truth[rows], self.ids[rows], self.scores[score][rows]
            _, hindsight, _ = best_threshold(truth, ids, sims, self.grid, self.k)
            out[f"map5_validation_threshold_{score}"] = self.map5(rows, self.threshold_validation[score], score)
            out[f"map5_estimated_share_threshold_{score}"] = self.map5(rows, threshold_estimated, score)
            out[f"map5_true_share_threshold_{score}"] = self.map5(rows, threshold_true, score)
            out[f"map5_hindsight_{score}"] = float(hindsight)
            out[f"map5_crossfit_hindsight_{score}"] = crossfit_hindsight_map5(
                truth, ids, sims, self.grid, self.k, np.random.default_rng(seed)
            )
            out["thresholds"][score] = {
                "validation": self.threshold_validation[score],
                "estimated": threshold_estimated,
            }
        test = self.test[self.test["image"].isin(images)]
        truth = pd.Series(self.truth, index=self.images)
        for name, share in (("validation", None), ("estimated", estimate.estimate)):
            table, *_ = decide(self.val_topk, test_topk, self.train, test, DecisionSettings(), seed=0, share=share)
            new = table["decision"].to_numpy() == NEW
            truly_new = truth.loc[table["Image"]].to_numpy() == NEW_WHALE
            out[f"auto_new_{name}"] = {
                "share": float(new.mean()),
                "precision": float(truly_new[new].mean()) if new.any() else None,
                "recall": float(new[truly_new].mean()) if truly_new.any() else None,
            }
        return out


def mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> dict:
    """Means over the seeds; the worst gap to hindsight and the worst estimation error."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: mean_of([r[k] for r in rows]) for k in keys}
    out["interval_holds_truth"] = float(np.mean([r["interval_holds_truth"] for r in rows]))
    for score in SCORES:
        estimated = f"map5_estimated_share_threshold_{score}"
        # The gap to the best threshold in hindsight on either score: what any threshold could have done.
        out[f"worst_gap_estimated_{score}"] = max(
            max(r[f"map5_hindsight_{s}"] for s in SCORES) - r[estimated] for r in rows
        )
        # Against a hindsight threshold that was not fitted to the photos it scores.
        out[f"worst_gap_crossfit_{score}"] = max(r[f"map5_crossfit_hindsight_{score}"] - r[estimated] for r in rows)
    out["worst_share_error"] = max(abs(r["estimated_share"] - r["true_share"]) for r in rows)
    for name in ("validation", "estimated"):
        out[f"auto_new_{name}"] = {
            key: mean_of([r[f"auto_new_{name}"][key] for r in rows]) for key in ("share", "precision", "recall")
        }
    return out


def bench_run(folder: Path, shares, seeds: int) -> dict:
    run = Run(folder)
    result = {
        "run": str(folder),
        "ensemble": str(run.ensemble),
        "validation_share": run.validation_share,
        "test_photos": len(run.images),
        "test_share": float(run.is_new.mean()),
        "threshold_validation": run.threshold_validation,
        "shares": {},
    }
    everything = np.arange(len(run.images))
    result["shares"]["as generated"] = summarise([run.measure(everything, seed=0)])
    for share in shares:
        rows = [run.measure(subsample(run.is_new, share, np.random.default_rng(seed)), seed) for seed in range(seeds)]
        result["shares"][f"{share:.2f}"] = {**summarise(rows), "seeds": rows}
    return result


def pair(s: dict, key: str) -> str:
    """'similarity / lift' of one measure."""
    return " / ".join(f"{s[f'{key}_{score}']:.3f}" for score in SCORES)


def tables(results: list[dict], command: str, env: dict) -> str:
    lines = [
        "# The new-individual decision at test new shares unlike validation's (issue 30)",
        "",
        f"{env['date']}, commit {env['git_commit']}, {env['cpu']}; `{command}`",
        "",
        "Each run's final ensemble tables as they are; test photos subsampled (known or new dropped,"
        " seeded) to each new share; means over the seeds. Each MAP@5 cell is `similarity / lift`: the"
        " threshold compared with the raw similarity (the rule before) or with its lift over the"
        " photo's cohort (`match.new_whale_score: lift`, the default now), chosen at the validation"
        " share (`match.new_share: validation`), at the estimated share (`auto`), at the true share, or"
        " the best threshold in hindsight (on the subsample's own truth). Worst gap: the better of the"
        " two hindsight values minus auto, worst seed. Hindsight cross-fitted: the threshold chosen"
        " on half the subsample's truth, scored on the other half (5 random halvings). Error floor: the"
        " standard deviation of a maximum-likelihood share estimate's error with P(new) known exactly"
        " (fitted on the test photos' own truth; `share_error_floor`): what the evidence and the"
        " number of photos allow. all-new_whale = every list only new_whale."
        " Automatic new: decisions at the 0.95 target, share of photos / precision / share of the"
        " truly new photos taken.",
        "",
    ]
    for result in results:
        thresholds = result["threshold_validation"]
        lines += [
            f"## {result['run']}",
            "",
            f"validation new share {result['validation_share']:.3f}; test {result['test_photos']} photos,"
            f" new share {result['test_share']:.3f}; validation threshold"
            f" {' / '.join(f'{thresholds[score]:.2f}' for score in SCORES)}",
            "",
        ]
        header = [
            "test share",
            "photos",
            "estimated (interval holds truth)",
            "worst |error|",
            "error floor (sd)",
            "MAP@5 validation thr",
            "MAP@5 auto",
            "MAP@5 true-share thr",
            "MAP@5 hindsight",
            "MAP@5 hindsight cross-fitted",
            "worst gap auto",
            "all-new_whale",
            "AUROC P(new) / top score",
            "auto-new validation",
            "auto-new auto",
        ]
        rows = []
        for name, s in result["shares"].items():
            rows.append(
                [
                    f"{name} ({s['true_share']:.3f})",
                    f"{s['photos']:.0f}",
                    f"{s['estimated_share']:.3f} ({s['interval_holds_truth']:.0%})",
                    s["worst_share_error"],
                    s["share_error_floor"],
                    pair(s, "map5_validation_threshold"),
                    pair(s, "map5_estimated_share_threshold"),
                    pair(s, "map5_true_share_threshold"),
                    pair(s, "map5_hindsight"),
                    pair(s, "map5_crossfit_hindsight"),
                    pair(s, "worst_gap_estimated"),
                    s["map5_all_new_whale"],
                    f"{s['auroc_p_new']:.3f} / {s['auroc_top_score']:.3f}",
                    auto_new(s["auto_new_validation"]),
                    auto_new(s["auto_new_estimated"]),
                ]
            )
        lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


def auto_new(entry: dict) -> str:
    def number(value):
        return "-" if value is None else f"{value:.2f}"

    return f"{number(entry['share'])} / {number(entry['precision'])} / {number(entry['recall'])}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished workflow folders (demo, Omniglot)")
    parser.add_argument("--shares", nargs="+", type=float, default=list(SHARES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    command = "python -m bench.bench_new_share " + shlex.join(sys.argv[1:] if argv is None else argv)
    env = environment()
    started = time.perf_counter()
    results = [bench_run(folder, args.shares, args.seeds) for folder in args.runs]
    result = {"command": command, "environment": env, "seconds": time.perf_counter() - started, "runs": results}
    write_part(args.out, "new_share", result, tables(results, command, env))
    print(tables(results, command, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
