"""The `peers` part of the benchmark suite: our pipeline beside the peer biologists already run,
on the same photos and the same split, in one bench run.

For each finished workflow folder given (the demo with `detect.method: none`, the demo default,
an Omniglot run, ...): the catalogue is the train table's known photos (new_whale photos name no
individual), each with the detect stage's box; the queries are the test photos whose individual
is in the catalogue (the test truth file the evaluate rule reads). Scored on them:

- each of our members (the local member, the global members, the ensemble): known-identity
  rank-1 and rank-5 from the member's test top-k table (new_whale left out of the ranking, so no
  threshold plays a part), and the run's submission MAP@5 from results/metrics.json;
- the references without training from metrics.json (all-new_whale, raw-pixel 1-NN, zero-shot 1-NN);
- Wildbook's HotSpotter (bench/peers: ibeis 2.6.0 in its own environment, default config,
  untrained) on the same catalogue and queries, and the ratio of our local member's rank-1 to it.

And, with no workflow run, the matchers alone on the real sets in ../shared/data (`--sets mantas
omniglot`: bench/peers/splits.py): our local matcher (each match.local.score) beside HotSpotter.

    .venv/bin/python -m bench.bench_peers RUN_DIR [RUN_DIR ...] [--sets mantas omniglot] --out bench/results/peers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import environment, markdown_table

NEW_WHALE = "new_whale"


def truth_file(run: Path) -> Path:
    """The test truth the run's evaluate rule read (demo or Omniglot)."""
    found = sorted(run.glob("resources/demo/*/test_truth.csv")) + sorted(
        run.glob("resources/omniglot/*/test_truth.csv")
    )
    if len(found) != 1:
        raise SystemExit(f"{run}: expected one test_truth.csv under resources/, found {found}")
    return found[0]


def catalogue_and_queries(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(gallery: path, id, x0..y1 of the known train photos; queries: image, path, id of the
    known test photos), indexed by image name."""
    train = pd.read_parquet(run / "results" / "data" / "train.parquet")
    test = pd.read_parquet(run / "results" / "data" / "test.parquet")
    truth = pd.read_csv(truth_file(run), dtype=str).set_index("Image")["Id"]
    gallery = train[train["id"] != NEW_WHALE].set_index("image")[["path", "id"]]
    boxes_path = run / "results" / "detect" / "boxes.parquet"
    if boxes_path.is_file():
        boxes = pd.read_parquet(boxes_path).drop_duplicates("image", keep="last").set_index("image")
        gallery = gallery.join(boxes[["x0", "y0", "x1", "y1"]])
    queries = test.set_index("image")[["path"]].assign(id=truth.reindex(test["image"]).to_numpy())
    queries = queries[queries["id"].isin(set(gallery["id"]))]
    if boxes_path.is_file():
        queries = queries.join(boxes[["x0", "y0", "x1", "y1"]])
    return gallery, queries


def member_ranks(topk_path: Path, queries: pd.DataFrame) -> dict:
    """Known-identity rank-1 and rank-5 of a member's test top-k table (new_whale rows dropped)."""
    table = pd.read_parquet(topk_path)
    table = table[table["id"] != NEW_WHALE].sort_values(["image", "rank"])
    lists = table.groupby("image")["id"].apply(list)
    ranks = []
    for image, identity in queries["id"].items():
        ranked = lists.get(image, [])
        ranks.append(ranked.index(identity) + 1 if identity in ranked else None)
    n = len(ranks)
    return {
        "n_known": n,
        "rank1": sum(r == 1 for r in ranks) / n if n else None,
        "rank5": sum(r is not None and r <= 5 for r in ranks) / n if n else None,
    }


def our_rows(run: Path, queries: pd.DataFrame) -> list[dict]:
    """Our final round's members and ensemble, and the references, as table rows."""
    metrics = json.loads((run / "results" / "metrics.json").read_text())
    test = metrics.get("test", {})
    methods = test.get("methods", {})
    final = max(int(name.rpartition("@round")[2]) for name in methods)
    rows = [{"method": "all-new_whale", "map5": test.get("all_new_whale", {}).get("map5")}]
    for name, entry in test.get("baselines", {}).items():
        rows.append({"method": name, "map5": entry.get("map5"), "rank1": entry.get("known_top1")})
    match = run / "results" / "match" / f"round{final}"
    for name in sorted(methods):
        if not name.endswith(f"@round{final}"):
            continue
        member = name.rpartition("@")[0]
        topk = match / member / "test_topk.parquet"
        row = {"method": name, "map5": methods[name].get("map5")}
        if topk.is_file():
            row.update(member_ranks(topk, queries))
        rows.append(row)
    return rows


def hotspotter_row(gallery: pd.DataFrame, queries: pd.DataFrame, folder: Path) -> dict:
    """HotSpotter on a gallery (path, id, optional boxes) and queries (path, id), its database in
    `folder`: known-identity rank-1 and rank-5, MAP@5 of the known queries, seconds per query."""
    from bench.peers.hotspotter import rank_scores, run_hotspotter

    ranked, info = run_hotspotter(gallery, queries, folder)
    scores = rank_scores(ranked, queries)
    return {
        "method": "HotSpotter (ibeis 2.6.0, untrained)",
        "rank1": scores["rank1"],
        "rank5": scores["rank5"],
        "map5_known": scores["map5"],
        "seconds_per_query": info["seconds_per_query_mean"],
        "descriptors_per_photo": info["descriptors_per_gallery_image_mean"],
    }


def local_seconds_per_query(run: Path) -> float | None:
    """Our local member's seconds per test+validation query (features, index and pairs), from its
    summary: the verified pairs' time plus the photo features' per photo."""
    found = sorted((run / "results" / "match").glob("round*/local_*/summary.json"))
    if not found:
        return None
    cost = json.loads(found[-1].read_text()).get("cost", {})
    per_photo = [v for v in (cost.get("seconds_per_image_features") or {}).values() if v is not None]
    per_pair = cost.get("seconds_per_pair") or 0.0
    return per_pair * cost.get("pairs_per_query_mean", 0.0) + (max(per_photo) if per_photo else 0.0)


def bench_run(run: Path, workdir: Path, with_peer: bool = True) -> dict:
    gallery, queries = catalogue_and_queries(run)
    rows = our_rows(run, queries)
    local = next((r for r in rows if r["method"].startswith("local_")), None)
    if local is not None:
        local["seconds_per_query"] = local_seconds_per_query(run)
    if with_peer:
        start = time.perf_counter()
        rows.append(hotspotter_row(gallery.reset_index(), queries.reset_index(), workdir / run.name))
        rows[-1]["wall_s"] = round(time.perf_counter() - start, 1)
    peer = rows[-1] if with_peer else None
    ratio = (local["rank1"] / peer["rank1"]) if local and peer and peer.get("rank1") else None
    return {
        "run": str(run),
        "catalogue_photos": len(gallery),
        "catalogue_ids": int(gallery["id"].nunique()),
        "known_queries": len(queries),
        "rows": rows,
        "local_over_hotspotter_rank1": ratio,
    }


def bench_set(name: str, workdir: Path, with_peer: bool = True) -> dict:
    """Matchers alone on a real set with no workflow run (bench/peers/splits.py: mantas, omniglot):
    our local matcher with each match.local.score beside HotSpotter, on the same gallery and
    queries, every gallery photo verified."""
    from bench.peers import splits

    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    gallery, queries = splits.mantas() if name == "mantas" else splits.omniglot(folder)
    rows = []
    for score in ("lnbnn", "inliers"):
        alone = local_alone(gallery, queries, score=score)
        rows.append({"method": f"local matcher alone, score {score}", **alone})
    # match.local.mirrors (the face preset's): each query matched as it is and mirrored.
    alone = local_alone(gallery, queries, score="lnbnn", mirrors=True)
    rows.append({"method": "local matcher alone, score lnbnn, mirrors", **alone})
    if with_peer:
        rows.append(hotspotter_row(gallery, queries, folder / "hotspotter"))
    ours, peer = rows[0], rows[-1] if with_peer else None
    return {
        "run": f"bench.peers.splits.{name}",
        "catalogue_photos": len(gallery),
        "catalogue_ids": int(gallery["id"].nunique()),
        "known_queries": int(queries["id"].isin(set(gallery["id"])).sum()),
        "rows": rows,
        "local_over_hotspotter_rank1": (ours["rank1"] / peer["rank1"]) if peer and peer.get("rank1") else None,
    }


def peers(reference) -> tuple[dict, str]:
    """The `peers` part of `python -m bench`: the reference run beside HotSpotter, and the matchers
    alone on the mantas and Omniglot beside it. --quick: our rows of the tiny reference only (no
    HotSpotter environment is built: it installs ibeis from the registry)."""
    reference.ensure()
    workdir = reference.workdir / "peers"
    with_peer = not reference.quick
    result = {
        "environment": environment(),
        "runs": {"reference": bench_run(reference.dir, workdir, with_peer)},
        "sets_skipped": "--quick" if reference.quick else None,
    }
    if not reference.quick:
        for name in ("mantas", "omniglot"):
            result["runs"][name] = bench_set(name, workdir)
    return result, peers_markdown(result)


def _cell(value, digits: int = 3) -> str:
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def peers_markdown(result: dict) -> str:
    parts = []
    for name, entry in result["runs"].items():
        header = ["method", "known rank-1", "known rank-5", "test MAP@5", "s / query"]
        rows = [
            [
                r["method"],
                _cell(r.get("rank1")),
                _cell(r.get("rank5")),
                _cell(r.get("map5")),
                _cell(r.get("seconds_per_query"), 3),
            ]
            for r in entry["rows"]
        ]
        parts.append(
            f"**{name}**: {entry['catalogue_photos']} catalogue photos of {entry['catalogue_ids']} individuals, "
            f"{entry['known_queries']} known test queries; local member / HotSpotter rank-1: "
            f"{_cell(entry['local_over_hotspotter_rank1'], 2)}\n\n" + markdown_table(header, rows)
        )
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="finished workflow folders (results/metrics.json)")
    parser.add_argument(
        "--sets", nargs="*", default=[], choices=("mantas", "omniglot"), help="matchers alone on these real sets"
    )
    parser.add_argument("--names", nargs="*", help="a name per run (default: the folder names)")
    parser.add_argument("--out", type=Path, required=True, help="writes peers.json and peers.md here")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/flukeline-peers"), help="HotSpotter's databases")
    parser.add_argument("--no-peer", action="store_true", help="our rows only (no HotSpotter run)")
    args = parser.parse_args(argv)
    names = args.names or [run.name for run in args.runs]
    result = {
        "environment": environment(),
        "command": " ".join(["python -m bench.bench_peers", *sys.argv[1:]]),
        "runs": {name: bench_run(run.resolve(), args.workdir, not args.no_peer) for name, run in zip(names, args.runs)},
    }
    for name in args.sets:
        result["runs"][name] = bench_set(name, args.workdir, not args.no_peer)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(result, indent=1, default=str))
    table = peers_markdown(result)
    (args.out / "peers.md").write_text(table + "\n")
    print(table)
    return 0


def local_alone(
    gallery: pd.DataFrame,
    queries: pd.DataFrame,
    long_side: int | None = None,
    score: str = "lnbnn",
    mirrors: bool = False,
) -> dict:
    """Our local matcher alone on a gallery (path, id) and queries (path, id), as the local
    member runs it on whole photos: chips at long_side (own size below it), LNBNN over every
    catalogue descriptor, every catalogue photo verified (RootSIFT, ratio, MAGSAC; small sets
    only), an identity ranked by its evidence (match.local.score: its inliers weighed by LNBNN,
    nsum, or its best photo's inliers), ties by LNBNN; with `mirrors` each query's features also
    mirrored (match.local.mirrors). Known-identity rank-1, rank-5 and seconds per query; the same
    split as bench.peers.splits gives HotSpotter."""
    from flukeline.match.local_features import pack_features
    from flukeline.match.local_index import DescriptorIndex
    from flukeline.match.local_matchers import SiftMatcher
    from flukeline.match.local_tables import identity_evidence
    from flukeline.match.pair_scoring import SCORE_COLUMNS, pair_row
    from flukeline.match.photo_features import photo_keypoints
    from flukeline.match.settings import LocalFeatureSettings, LocalPairSettings

    features = LocalFeatureSettings() if long_side is None else LocalFeatureSettings(long_side=long_side)
    pair = LocalPairSettings()
    whole = (0, 0, 10**6, 10**6)  # clipped to the photo: the whole photo, as detect.method none
    found = [photo_keypoints(str(p), whole, "sift", features) for p in gallery["path"]]
    index = DescriptorIndex(
        gallery["path"].astype(str), gallery["id"].astype(str), [0] * len(gallery), [f[1] for f in found]
    )
    matcher = SiftMatcher(pair.ratio, pair.ransac_threshold)
    known = queries[queries["id"].isin(set(gallery["id"]))]
    ranks, start = [], time.perf_counter()
    for path, identity in zip(known["path"], known["id"]):
        xy, descriptors, _ = photo_keypoints(str(path), whole, "sift", features)
        if mirrors:
            xy, descriptors = pack_features("sift", "photo", ["q"], [(xy, descriptors)]).with_mirrors().get("q")
        votes = index.query(descriptors)
        prepared = matcher.prepare(xy, descriptors)
        # Each pair's columns as the member scores them (no points kept for a page).
        scored = [
            pair_row(matcher.match(prepared, photo[:2]), (1, 1), False, None, votes.normalisers) for photo in found
        ]
        pairs = pd.DataFrame(scored, columns=list(SCORE_COLUMNS)).assign(
            split="test", query=str(path), fold=-1, gallery_id=gallery["id"].astype(str).to_numpy(), identity_rank=0
        )
        evidence = identity_evidence(pairs, score).set_index("gallery_id")["evidence"]
        lnbnn = dict(zip(index.identities, votes.identity_scores))
        ranked = sorted(evidence.index, key=lambda n: (-evidence[n], -lnbnn.get(n, 0.0)))
        ranks.append(ranked.index(identity) + 1)
    ranks = np.array(ranks)
    return {
        "known_queries": len(ranks),
        "rank1": float(np.mean(ranks == 1)),
        "rank5": float(np.mean(ranks <= 5)),
        "long_side": features.long_side,
        "score": score,
        "mirrors": mirrors,
        "seconds_per_query": (time.perf_counter() - start) / max(1, len(ranks)),
    }


if __name__ == "__main__":
    sys.exit(main())
