"""Top-5 inner-product search at scale (issues 7 and 11): exact FAISS, FAISS ANN indexes and
NumPy brute force on L2-normalised float32 vectors, with recall@5 against the exact result and
the share of the machine's matmul ceiling (measured in the same run) that the search reached.

Usage: .venv/bin/python bench/bench_search.py [--sizes 100000 1000000] [--queries 10000]
           [--data clustered random] [--random-sizes 100000] [--threads N]
           [--numpy-queries 2000] [--quick] [--out bench/results/search.json]
Writes the JSON and, next to it, the Markdown table (also printed).

Data ("clustered", the default, meant to look like re-identification embeddings): identity
centres drawn from N(0, diag(lambda)) with a power-law spectrum lambda_i ~ (1+i)^-0.75 (an
effective dimension of about 96 of 512) and normalised; each gallery vector is a noisy copy of a
uniformly drawn identity (identities = gallery/4, so Poisson(4) copies each):
normalise(centre + sigma * g / sqrt(d)) with isotropic Gaussian g and sigma 0.75 (cosine to the
centre about 0.8, between two copies about 0.64). Queries are fresh noisy copies, made the same
way, of identities that are in the gallery. "random" is pure isotropic Gaussian data,
normalised: no structure at all, the worst case for ANN indexes. (Flat, HNSW and IVF-Flat are
rotation invariant, so the spectrum needs no random rotation.) The gallery is generated in
chunks straight into one preallocated array.

Methods: faiss IndexFlatIP (exact, the reference for recall); numpy brute force, blocked matmul +
np.argpartition top-5 per (q_block x g_block) score block, merged across gallery blocks, memory
bounded by the block size: "numpy" partitions whole rows, "numpy_groupmax" partitions the maxima
of 64-column groups first and then only the 5 best groups' columns (exact, less selection work);
faiss IndexHNSWFlat (inner product; M, efConstruction, several efSearch; only up to
--hnsw-max-gallery, its build being the slowest step); faiss IndexIVFFlat (inner product; nlist
default the power of two nearest sqrt(N), trained on 64 points per list; several nprobe). Build
(HNSW add; IVF train + add) is timed apart from search. recall@5 = mean over queries of
|top5(method) & top5(exact)| / 5.

GFLOP/s and "% of ceiling" are given for the brute-force methods (2 * Q * N * d flops); the
ceiling is the best float32 `a @ b` (4096x512 @ 512x8192, best of 5) GFLOP/s, measured before
each gallery and at the end of this run (the best measurement is used). FAISS's OpenMP threads
and every BLAS pool (numpy's and faiss's OpenBLAS) are set to --threads (default: the cores this
process may use). Process CPU time per search is recorded ("cores busy") to expose contention.

At galleries of at least --subset-from (1M): --exact-queries M lets exact FAISS and numpy search
only the first M queries (all recalls are then measured on those), --numpy-queries M only numpy;
their times for all queries are extrapolated linearly and marked as estimates in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
K = 5

try:  # a transitive dependency (scikit-learn's); without it the OMP/OPENBLAS env vars rule
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_info = threadpool_limits = None


# ---------------------------------------------------------------- threads and the matmul ceiling


def set_threads(threads: int) -> dict:
    """FAISS OpenMP threads and every BLAS pool (numpy's and faiss's own OpenBLAS) to `threads`."""
    faiss.omp_set_num_threads(threads)
    pools = []
    if threadpool_limits is not None:
        threadpool_limits(limits=threads)
        pools = [
            {"api": p["internal_api"], "library": Path(p["filepath"]).name, "threads": p["num_threads"]}
            for p in threadpool_info()
        ]
    return {"threads": threads, "faiss_omp_threads": faiss.omp_get_max_threads(), "pools": pools}


def matmul_gflops(repeats: int = 5, m: int = 4096, k: int = 512, n: int = 8192) -> float:
    """Best-of-`repeats` float32 GFLOP/s of numpy `a @ b` (m x k @ k x n)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


# ---------------------------------------------------------------------------------------- data


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def make_data(
    kind: str,
    n_gallery: int,
    n_queries: int,
    dim: int,
    seed: int,
    chunk: int = 65536,
    copies: float = 4.0,
    sigma: float = 0.75,
    alpha: float = 0.75,
):
    """Gallery (n_gallery x dim) and queries, float32, L2-normalised, generated in chunks into
    preallocated arrays (no extra full-size copies). Returns gallery, queries, description."""
    rng = np.random.default_rng(seed)
    gallery = np.empty((n_gallery, dim), dtype=np.float32)
    queries = np.empty((n_queries, dim), dtype=np.float32)
    if kind == "random":
        for target in (gallery, queries):
            for start in range(0, len(target), chunk):
                block = target[start : start + chunk]
                block[:] = rng.standard_normal(block.shape, dtype=np.float32)
                _normalise_rows(block)
        return (
            gallery,
            queries,
            {"kind": "random", "description": "isotropic Gaussian, normalised (no structure: the worst case for ANN)"},
        )
    if kind != "clustered":
        raise ValueError(f"unknown data kind {kind!r}")
    n_ids = max(1, int(round(n_gallery / copies)))
    scale = ((1.0 + np.arange(dim)) ** (-alpha / 2)).astype(np.float32)  # std: sqrt of the spectrum
    centres = np.empty((n_ids, dim), dtype=np.float32)
    for start in range(0, n_ids, chunk):
        block = centres[start : start + chunk]
        block[:] = rng.standard_normal(block.shape, dtype=np.float32) * scale
        _normalise_rows(block)
    noise = np.float32(sigma / math.sqrt(dim))
    gallery_ids = rng.integers(0, n_ids, size=n_gallery)
    query_ids = gallery_ids[rng.integers(0, n_gallery, size=n_queries)]  # identities present in the gallery
    for target, ids in ((gallery, gallery_ids), (queries, query_ids)):
        for start in range(0, len(target), chunk):
            block = target[start : start + chunk]
            block[:] = rng.standard_normal(block.shape, dtype=np.float32)
            block *= noise
            block += centres[ids[start : start + chunk]]
            _normalise_rows(block)
    del centres
    per_id = np.bincount(gallery_ids, minlength=n_ids)
    spectrum = scale.astype(np.float64) ** 2
    effective_dim = float(spectrum.sum() ** 2 / (spectrum**2).sum())
    description = (
        f"{n_ids:,} identities with Poisson({copies:g}) noisy copies each (sigma {sigma}, centres with a "
        f"power-law spectrum of exponent {alpha}, effective dim {effective_dim:.0f} of {dim}); queries are "
        "fresh noisy copies of gallery identities"
    )
    return (
        gallery,
        queries,
        {
            "kind": "clustered",
            "description": description,
            "identities": n_ids,
            "copies_mean": copies,
            "sigma": sigma,
            "spectrum_alpha": alpha,
            "effective_dim": round(effective_dim, 1),
            "identities_in_gallery": int((per_id > 0).sum()),
            "queries_with_5_or_more_copies": round(float((per_id[query_ids] >= K).mean()), 3),
            "gallery_ids": gallery_ids,
            "query_ids": query_ids,
        },
    )


# ----------------------------------------------------------------------------------- searches


def _top_in_rows(scores: np.ndarray, k: int, group: int) -> np.ndarray:
    """Column indices of each row's k largest scores (unordered). group > 0: np.argpartition of
    the maxima of `group`-wide column groups first, then of the k best groups' columns only; exact
    (each of a row's top k lies in one of its k groups with the largest maxima) and much less
    selection work than argpartition over the whole row."""
    n = scores.shape[1]
    if group and n % group == 0 and n // group > k:
        groups = scores.reshape(len(scores), n // group, group)
        best = np.argpartition(groups.max(axis=2), -k, axis=1)[:, -k:]
        cand = np.take_along_axis(groups, best[:, :, None], axis=1).reshape(len(scores), k * group)
        top = np.argpartition(cand, -k, axis=1)[:, -k:]
        return np.take_along_axis(best, top // group, axis=1) * group + top % group
    return np.argpartition(scores, -k, axis=1)[:, -k:]


def numpy_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int = K,
    q_block: int = 1024,
    g_block: int = 16384,
    workers: int = 2,
    group: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: blocked matmul (BLAS threads) + np.argpartition top-k per
    block (plain, or with group > 0 on group maxima first, see _top_in_rows), split over `workers`
    threads (numpy releases the GIL there), merged over gallery blocks. Memory: one q_block x
    g_block score block and its selection temporaries. Returns (scores, ids), best first."""
    n_q, n_g = len(queries), len(gallery)
    k = min(k, n_g)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    out_ids = np.empty((n_q, k), dtype=np.int64)
    buffer = np.empty((q_block, g_block), dtype=np.float32)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def block_top(scores: np.ndarray, kk: int) -> np.ndarray:
        if pool is None or len(scores) < 2 * workers:
            return _top_in_rows(scores, kk, group)
        bounds = np.linspace(0, len(scores), workers + 1).astype(int)
        parts = pool.map(lambda ab: _top_in_rows(scores[ab[0] : ab[1]], kk, group), zip(bounds[:-1], bounds[1:]))
        return np.concatenate(list(parts))

    try:
        for q0 in range(0, n_q, q_block):
            q = queries[q0 : q0 + q_block]
            cand_scores, cand_ids = [], []
            for g0 in range(0, n_g, g_block):
                g = gallery[g0 : g0 + g_block]
                kk = min(k, len(g))
                if len(q) == q_block and len(g) == g_block:
                    scores = np.matmul(q, g.T, out=buffer)
                else:  # ragged last blocks
                    scores = q @ g.T
                top = block_top(scores, kk)
                cand_scores.append(np.take_along_axis(scores, top, axis=1))
                cand_ids.append(top + g0)
            cand_scores = np.concatenate(cand_scores, axis=1)
            cand_ids = np.concatenate(cand_ids, axis=1)
            top = np.argpartition(cand_scores, -k, axis=1)[:, -k:]
            top_scores = np.take_along_axis(cand_scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            out_scores[q0 : q0 + len(q)] = np.take_along_axis(top_scores, order, axis=1)
            out_ids[q0 : q0 + len(q)] = np.take_along_axis(np.take_along_axis(cand_ids, top, axis=1), order, axis=1)
    finally:
        if pool is not None:
            pool.shutdown()
    return out_scores, out_ids


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found_i & exact_i| / k (set overlap of the top-k ids)."""
    k = exact.shape[1]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact))
    return hits / (k * len(exact))


def _timed(fn):
    """(value, wall seconds, process CPU seconds) of fn()."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - start, time.process_time() - cpu


def default_nlist(n: int) -> int:
    """Power of two nearest sqrt(n) (256 at 100k, 1024 at 1M), at least 4."""
    return max(4, 2 ** int(round(math.log2(math.sqrt(n)))))


def bench_size(gallery: np.ndarray, queries: np.ndarray, args, meta: dict) -> list[dict]:
    """Every method on one gallery; rows for the JSON/table. Adds exact_top1_same_identity to meta."""
    n_g, dim = gallery.shape
    n_q = len(queries)
    subset = n_g >= args.subset_from
    n_exact = min(n_q, args.exact_queries) if (subset and args.exact_queries) else n_q
    n_numpy = min(n_exact, args.numpy_queries) if (subset and args.numpy_queries) else n_exact
    rows = []

    def row(method, params, build_s, timing, searched, ids, exact_ids, brute=False, extra=None):
        search_s, cpu_s = timing
        n_rec = min(len(ids), len(exact_ids))
        r = {
            "data": meta["kind"],
            "gallery": n_g,
            "queries": n_q,
            "dim": dim,
            "method": method,
            "params": params,
            "build_s": None if build_s is None else round(build_s, 3),
            "search_s": round(search_s, 6),  # quick mode: a fast method can take < 1 ms
            "search_cpu_s": round(cpu_s, 3),
            "cores_busy": round(cpu_s / search_s, 2),
            "queries_searched": searched,
            "search_s_all_queries": round(search_s * n_q / searched, 3),
            "search_extrapolated": searched < n_q,
            "queries_per_s": round(searched / search_s, 1),
            "recall_at_5": round(recall_at_k(ids[:n_rec], exact_ids[:n_rec]), 5),
            "recall_queries": n_rec,
        }
        if brute:
            r["search_gflops"] = round(2.0 * searched * n_g * dim / search_s / 1e9, 1)
        r.update(extra or {})
        rows.append(r)
        build = "-" if build_s is None else r["build_s"]
        print(
            f"  {method:<14} {json.dumps(params):<44} build {build}s search {r['search_s']}s "
            f"({searched} q, {r['cores_busy']} cores busy) {r['queries_per_s']} q/s recall@5 {r['recall_at_5']}"
            + (f" {r['search_gflops']} GFLOP/s" if brute else ""),
            flush=True,
        )

    # Exact FAISS: the reference for recall.
    index = faiss.IndexFlatIP(dim)
    _, build_s, _ = _timed(lambda: index.add(gallery))
    (exact_scores, exact_ids), *timing = _timed(lambda: index.search(queries[:n_exact], K))
    del index
    row("faiss_flat", {}, build_s, timing, n_exact, exact_ids, exact_ids, brute=True)
    if "query_ids" in meta:
        meta["exact_top1_same_identity"] = round(
            float((meta["gallery_ids"][exact_ids[:, 0]] == meta["query_ids"][:n_exact]).mean()), 4
        )

    # NumPy brute force: plain argpartition per block, and on group maxima first.
    for method, group in (("numpy", 0), ("numpy_groupmax", args.group)):
        if method == "numpy_groupmax" and not group:
            continue
        (np_scores, np_ids), *timing = _timed(
            lambda group=group: numpy_search(
                queries[:n_numpy], gallery, K, args.q_block, args.g_block, args.threads, group
            )
        )
        params = {"q_block": args.q_block, "g_block": args.g_block, **({"group": group} if group else {})}
        diff = float(np.abs(np_scores - exact_scores[:n_numpy]).max())
        row(
            method,
            params,
            None,
            timing,
            n_numpy,
            np_ids,
            exact_ids,
            brute=True,
            extra={"max_abs_score_diff_vs_faiss": diff},
        )
        del np_scores, np_ids

    # HNSW (inner product).
    if args.hnsw_m and n_g <= args.hnsw_max_gallery:
        index = faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        _, build_s, build_cpu = _timed(lambda: index.add(gallery))
        for ef in args.ef_search:
            index.hnsw.efSearch = ef
            (_, ids), *timing = _timed(lambda: index.search(queries, K))
            row(
                "faiss_hnsw",
                {"M": args.hnsw_m, "efConstruction": args.ef_construction, "efSearch": ef},
                build_s,
                timing,
                n_q,
                ids,
                exact_ids,
                extra={"build_cpu_s": round(build_cpu, 2)},
            )
        del index

    # IVF-Flat (inner product).
    if args.nprobe:
        nlist = args.nlist or default_nlist(n_g)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(n_g, args.train_per_list * nlist)
        sample = gallery[np.sort(np.random.default_rng(1).choice(n_g, n_train, replace=False))]
        _, train_s, _ = _timed(lambda: index.train(sample))
        del sample
        _, add_s, _ = _timed(lambda: index.add(gallery))
        for nprobe in args.nprobe:
            index.nprobe = min(nprobe, nlist)
            (_, ids), *timing = _timed(lambda: index.search(queries, K))
            row(
                "faiss_ivf",
                {"nlist": nlist, "nprobe": index.nprobe},
                train_s + add_s,
                timing,
                n_q,
                ids,
                exact_ids,
                extra={"train_s": round(train_s, 3), "add_s": round(add_s, 3), "train_points": n_train},
            )
        del index, quantizer
    return rows


# ------------------------------------------------------------------------------------- output


def _fmt_int(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def markdown(result: dict) -> str:
    env, ceiling = result["environment"], result["ceiling"]
    lines = [
        f"Top-{K} inner-product search, {result['queries']:,} queries, d={result['dim']}, float32, L2-normalised; "
        f"{env['threads']['threads']} threads ({env['cpu']}, nice {env['nice']}); load average "
        f"{env['loadavg_before'][0]} before, {env['loadavg_after'][0]} after. Matmul ceiling ({ceiling['shape']}, "
        f"best of {ceiling['repeats']}, measured {len(ceiling['measured'])} times in this run: "
        f"{', '.join(f'{g:.0f}' for g in ceiling['measured'])} GFLOP/s): {ceiling['gflops']:.1f} GFLOP/s, "
        "the best of them.",
        "",
        "| data | gallery | method | params | build s | search s | queries/s | cores busy | recall@5 "
        "| GFLOP/s | % of ceiling |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        build = "-" if r["build_s"] is None else f"{r['build_s']:.2f}"
        if r["method"] == "faiss_ivf":
            build = f"{r['build_s']:.2f} (train {r['train_s']:.2f})"
        search = f"{r['search_s_all_queries']:.2f}"
        if r["search_extrapolated"]:
            search += f" (est. from {r['queries_searched']:,} q)"
        gflops = r.get("search_gflops")
        gflops_cell = "-" if gflops is None else f"{gflops:.1f}"
        share = "-" if gflops is None else f"{100 * r['ceiling_fraction']:.0f}%"
        lines.append(
            f"| {r['data']} | {_fmt_int(r['gallery'])} | {r['method']} | {params} | {build} | {search} | "
            f"{r['queries_per_s']:,.0f} | {r['cores_busy']:.2f} | {r['recall_at_5']:.4f} | {gflops_cell} | {share} |"
        )
    notes = [
        "recall@5: mean set overlap of the top-5 ids with exact FAISS (IndexFlatIP) on the same queries.",
        "cores busy: process CPU seconds / wall seconds of the search (below the thread count: other load on "
        "the machine, or serial parts).",
        "GFLOP/s = 2*Q*N*d / search time, for the brute-force methods; % of ceiling = that / the matmul ceiling.",
        "IVF build = train + add; HNSW build = add.",
    ]
    if any(r["search_extrapolated"] for r in result["rows"]):
        notes.append(
            "'est.': only the first queries were searched and the time is scaled linearly to all "
            "queries; recall is measured on those queries."
        )
    if result["hnsw_max_gallery"] and result["hnsw_max_gallery"] < max(d["gallery"] for d in result["data"]):
        notes.append(f"HNSW was built only for galleries up to {result['hnsw_max_gallery']:,} (--hnsw-max-gallery).")
    for d in result["data"]:
        note = f"Data {d['kind']} {_fmt_int(d['gallery'])}: {d['description']}"
        if "exact_top1_same_identity" in d:
            note += (
                f"; the exact top-1 is a copy of the query's identity for {100 * d['exact_top1_same_identity']:.1f}%"
            )
        notes.append(note + ".")
    lines += [
        "",
        *[f"- {n}" for n in notes],
        "",
        f"Total wall time {result['wall_s']:.0f} s; command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", nargs="+", default=["clustered"], choices=["clustered", "random"])
    parser.add_argument(
        "--random-sizes", type=int, nargs="+", default=None, help="gallery sizes for 'random' data (default: --sizes)"
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--hnsw-m", type=int, default=32, help="0 skips HNSW")
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument(
        "--hnsw-max-gallery",
        type=int,
        default=200_000,
        help="build HNSW only up to this gallery size (its build is the slowest step)",
    )
    parser.add_argument("--nlist", type=int, default=None, help="default: power of two nearest sqrt(gallery)")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[8, 32], help="none skips IVF")
    parser.add_argument("--train-per-list", type=int, default=64, help="IVF training points per list")
    parser.add_argument("--q-block", type=int, default=1024)
    parser.add_argument("--g-block", type=int, default=16384)
    parser.add_argument("--group", type=int, default=64, help="numpy_groupmax column group (0 skips it)")
    parser.add_argument(
        "--subset-from",
        type=int,
        default=1_000_000,
        help="gallery size from which --exact-queries/--numpy-queries apply",
    )
    parser.add_argument(
        "--exact-queries",
        type=int,
        default=None,
        help="exact FAISS and numpy search only the first M queries (recall on those)",
    )
    parser.add_argument("--numpy-queries", type=int, default=None, help="numpy searches only the first M queries")
    parser.add_argument("--ceiling-repeats", type=int, default=5)
    parser.add_argument(
        "--ceiling-shape",
        type=int,
        nargs=3,
        default=[4096, 512, 8192],
        metavar=("M", "K", "N"),
        help="matmul ceiling: float32 (M x K) @ (K x N)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for CI")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path; the table goes next to it as .md (default bench/results/search.json, "
        "search_quick.json with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:  # ragged blocks on purpose: 3000 = 2 * 1024 + 952 gallery rows, 300 = 2 * 128 + 44 queries
        args.sizes, args.queries, args.dim, args.hnsw_max_gallery = [3000], 300, 64, 3000
        args.random_sizes = args.random_sizes or [3000]
        args.ef_search, args.nprobe, args.q_block, args.g_block, args.group = [16, 64], [2, 8], 128, 1024, 32
        args.ceiling_repeats, args.ceiling_shape = 2, [1024, 512, 2048]
    out = args.out or REPO / "bench" / "results" / ("search_quick.json" if args.quick else "search.json")
    started = time.perf_counter()
    threads = set_threads(args.threads)
    load_before = os.getloadavg()
    measured = []

    def ceiling_now(when: str) -> None:
        measured.append(matmul_gflops(args.ceiling_repeats, *args.ceiling_shape))
        print(f"matmul ceiling {when}: {measured[-1]:.1f} GFLOP/s ({args.threads} threads)", flush=True)

    rows, data_info = [], []
    for kind in args.data:
        for n in (args.random_sizes or args.sizes) if kind == "random" else args.sizes:
            ceiling_now(f"before {kind} {n:,}")
            (gallery, queries, meta), gen_s, _ = _timed(
                lambda kind=kind, n=n: make_data(kind, n, args.queries, args.dim, args.seed)
            )
            print(
                f"{kind} gallery {n:,} x {args.dim}, {args.queries:,} queries (generated in {gen_s:.1f} s)", flush=True
            )
            rows += bench_size(gallery, queries, args, meta)
            info = {k: v for k, v in meta.items() if k not in ("gallery_ids", "query_ids")}
            data_info.append({"gallery": n, "generate_s": round(gen_s, 2), **info})
            del gallery, queries, meta
    ceiling_now("at the end")
    ceiling = max(measured)
    for r in rows:
        if "search_gflops" in r:
            r["ceiling_fraction"] = round(r["search_gflops"] / ceiling, 3)

    result = {
        "benchmark": "search",
        "k": K,
        "queries": args.queries,
        "dim": args.dim,
        "quick": args.quick,
        "command": ".venv/bin/python bench/bench_search.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "ceiling": {
            "gflops": round(ceiling, 1),
            "measured": [round(g, 1) for g in measured],
            "shape": "{}x{} @ {}x{} float32".format(*args.ceiling_shape[:2], *args.ceiling_shape[1:]),
            "repeats": args.ceiling_repeats,
        },
        "environment": {
            "threads": threads,
            "cpu": _cpu_name(),
            "nice": os.nice(0),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "hnsw_max_gallery": args.hnsw_max_gallery if args.hnsw_m else 0,
        "data": data_info,
        "rows": rows,
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print("\n" + table, flush=True)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} logical CPUs visible"
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
