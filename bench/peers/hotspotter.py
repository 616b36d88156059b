"""Wildbook's HotSpotter (ibeis 2.6.0) as a benchmark peer, untrained, in its default config.

Our side: it never imports ibeis. `run_hotspotter` writes a job JSON, runs hotspotter_job.py
with the peer environment's python (hotspotter_env.py builds it on first use), and reads the
results back; `rank_scores` scores them like our pipeline's known-identity numbers.

    python -m bench.peers.hotspotter --gallery-csv G --queries-csv Q --workdir W

The gallery CSV has columns path, id (and optionally x0, y0, x1, y1: the animal's box in
pixels); the queries CSV path, id. Relative paths are taken from the CSV's folder.

HotSpotter ranks only the names that keep a spatially verified match; a query whose individual
is not among them (or that gets no name at all) counts as a miss at every rank.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.peers.hotspotter_env import ensure_env, peer_subprocess_env

JOB_SCRIPT = Path(__file__).resolve().parent / "hotspotter_job.py"
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _box(row) -> list[float] | None:
    values = [row.get(c) for c in BOX_COLUMNS]
    if any(v is None or pd.isna(v) for v in values):
        return None
    return [float(v) for v in values]


def _id_lookup(ids) -> dict[str, object]:
    """str(id) -> the caller's id (the job speaks strings); two ids with one string are refused."""
    lookup: dict[str, object] = {}
    for value in ids:
        key = str(value)
        if key in lookup and lookup[key] != value:
            raise ValueError(f"gallery ids {lookup[key]!r} and {value!r} have the same text")
        lookup[key] = value
    return lookup


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_hotspotter(
    gallery: pd.DataFrame,
    queries: pd.DataFrame,
    workdir: Path,
    *,
    python: Path | None = None,
    timeout: float | None = None,
) -> tuple[pd.DataFrame, dict]:
    """HotSpotter's ranked names for each query, and what the run reports about itself.

    gallery: columns path, id (optional x0, y0, x1, y1); queries: path (id optional, passed on).
    Returns `ranked` with columns query (the queries frame's index label), rank (1 = best), name
    (a gallery id), score (HotSpotter's nsum name score), only names with a score > 0; its
    attrs["gallery_ids"] holds the gallery's ids for `rank_scores`. `info` has the seconds per
    query, descriptor counts, chip sizes, ibeis' config and the log's path.
    """
    for frame, need, what in ((gallery, ("path", "id"), "gallery"), (queries, ("path",), "queries")):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(f"{what} lacks column(s) {missing}")
    if not queries.index.is_unique:
        raise ValueError("the queries' index labels the results; it must be unique")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    peer_python = Path(python) if python is not None else ensure_env()
    id_of = _id_lookup(gallery["id"])

    def entry(row, name):
        item = {"path": str(Path(row["path"]).resolve())}
        if name is not None:
            item["name"] = name
        box = _box(row)
        if box is not None:
            item["box"] = box
        return item

    job = {
        "gallery": [entry(row, str(row["id"])) for _, row in gallery.iterrows()],
        "queries": [
            entry(row, None if "id" not in queries.columns or pd.isna(row["id"]) else str(row["id"]))
            for _, row in queries.iterrows()
        ],
        "workdir": str(workdir),
    }
    job_path, results_path, log = workdir / "job.json", workdir / "results.json", workdir / "hotspotter.log"
    job_path.write_text(json.dumps(job, indent=1))
    results_path.unlink(missing_ok=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        try:
            rc = subprocess.run(
                [str(peer_python), str(JOB_SCRIPT), str(job_path), str(results_path)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=peer_subprocess_env(),
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"HotSpotter ran past {timeout} s; log {log}:\n{_tail(log)}") from err
    wall = time.perf_counter() - started
    if rc != 0 or not results_path.is_file():
        raise RuntimeError(f"HotSpotter's job failed (exit {rc}); log {log} ends:\n{_tail(log)}")
    result = json.loads(results_path.read_text())

    labels = list(queries.index)
    rows = [
        (labels[q["index"]], rank, id_of[item["name"]], item["score"])
        for q in result["queries"]
        for rank, item in enumerate((i for i in q["ranked"] if i["score"] > 0), start=1)
    ]
    ranked = pd.DataFrame(rows, columns=["query", "rank", "name", "score"])
    ranked.attrs["gallery_ids"] = list(id_of.values())

    seconds = np.array([q["seconds"] for q in result["queries"]], dtype=float)
    query_feats = np.array([q["n_descriptors"] for q in result["queries"]], dtype=float)
    gallery_feats = np.array(result["gallery_descriptors"], dtype=float)
    info = {
        "peer": "hotspotter",
        "ibeis_version": result["ibeis_version"],
        "python": result["python"],
        "call": result["call"],
        "pipeline_root": result["pipeline_root"],
        "cfgstr": result["cfgstr"],
        "qparams": result["qparams"],
        "n_gallery": result["n_gallery"],
        "n_gallery_names": result["n_gallery_names"],
        "n_queries": result["n_queries"],
        "seconds_per_query_mean": float(seconds.mean()),
        "seconds_per_query_median": float(np.median(seconds)),
        "seconds_per_query_max": float(seconds.max()),
        "seconds": result["seconds"],
        "subprocess_wall_s": wall,
        "gallery_descriptors_total": result["gallery_descriptors_total"],
        "descriptors_per_gallery_image_mean": float(gallery_feats.mean()),
        "descriptors_per_query_image_mean": float(query_feats.mean()),
        "chip_sizes": sorted({tuple(s) for s in result["gallery_chip_sizes"]}),
        "queries_without_any_name": int(
            sum(1 for q in result["queries"] if not any(i["score"] > 0 for i in q["ranked"]))
        ),
        "queries_same_image_as_gallery": result["queries_same_image_as_gallery"],
        "log": str(log),
        "results": str(results_path),
    }
    return ranked, info


def rank_scores(ranked: pd.DataFrame, queries: pd.DataFrame, gallery_ids=None, k: int = 5) -> dict:
    """Known-identity rank-1, rank-5 and MAP@5 over the queries whose id is in the gallery.

    MAP@5 is Kaggle's (humpback whale identification): 1/rank of the true id within the top 5
    names, else 0; here the top 5 are HotSpotter's names alone (no new_whale). `gallery_ids`
    defaults to ranked.attrs["gallery_ids"] (set by run_hotspotter).
    """
    if gallery_ids is None:
        gallery_ids = ranked.attrs.get("gallery_ids")
        if gallery_ids is None:
            raise ValueError("pass gallery_ids (ranked has no attrs['gallery_ids'])")
    known = set(gallery_ids)
    truth = queries["id"]
    known_queries = [label for label, value in truth.items() if value in known]
    by_query = {
        label: group.sort_values("rank")["name"].tolist() for label, group in ranked.groupby("query", sort=False)
    }
    ranks = []
    for label in known_queries:
        names = by_query.get(label, [])
        ranks.append(names.index(truth[label]) + 1 if truth[label] in names else None)
    n = len(ranks)

    def share(predicate) -> float | None:
        return sum(1 for r in ranks if predicate(r)) / n if n else None

    return {
        "n_queries": int(len(queries)),
        "n_known": n,
        "rank1": share(lambda r: r == 1),
        "rank5": share(lambda r: r is not None and r <= k),
        "map5": (sum(1.0 / r for r in ranks if r is not None and r <= k) / n) if n else None,
        "ranks": {str(label): r for label, r in zip(known_queries, ranks)},
    }


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"id": str})
    base = Path(path).resolve().parent
    frame["path"] = [str(p if Path(p).is_absolute() else base / p) for p in frame["path"]]
    return frame


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run HotSpotter (ibeis 2.6.0, default config) and score it.")
    parser.add_argument("--gallery-csv", type=Path, required=True, help="columns path, id (optional x0,y0,x1,y1)")
    parser.add_argument("--queries-csv", type=Path, required=True, help="columns path, id")
    parser.add_argument("--workdir", type=Path, required=True, help="job, log, results and ibeis database")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the HotSpotter job")
    args = parser.parse_args(argv)
    gallery, queries = _read_csv(args.gallery_csv), _read_csv(args.queries_csv)
    ranked, info = run_hotspotter(gallery, queries, args.workdir, timeout=args.timeout)
    scores = rank_scores(ranked, queries)
    ranked.to_csv(Path(args.workdir) / "ranked.csv", index=False)
    keep = (
        "n_gallery",
        "n_gallery_names",
        "n_queries",
        "seconds_per_query_mean",
        "seconds_per_query_median",
        "seconds_per_query_max",
        "seconds",
        "gallery_descriptors_total",
        "descriptors_per_gallery_image_mean",
        "descriptors_per_query_image_mean",
        "chip_sizes",
        "queries_without_any_name",
        "cfgstr",
        "call",
        "log",
    )
    summary = {"scores": {k: v for k, v in scores.items() if k != "ranks"}, **{k: info[k] for k in keep}}
    (Path(args.workdir) / "scores.json").write_text(json.dumps({"scores": scores, "info": info}, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
