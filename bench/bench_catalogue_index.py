"""Cost of the local member's catalogue index (match/local_index.py) as the catalogue grows:
descriptors per photo, index bytes, build seconds, peak memory and milliseconds per query at
1k, 5k and 25k catalogue photos, on the machine's cores.

The photos' descriptors are real ones: a finished run's photo feature table (e.g. the demo's
results/match/local/sift_photo768/features_train.npz), repeated to reach the size, each repeat's
descriptors jittered by a few levels so that no two catalogue photos are identical; the queries
are the table's photos themselves (each has a true match in the catalogue, as a query would).

    .venv/bin/python -m bench.bench_catalogue_index FEATURES.npz --sizes 1000 5000 25000 --out DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import environment, markdown_table


def catalogue(features, photos: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """`photos` descriptor arrays (the table's, repeated and jittered), their identities and folds."""
    rng = np.random.default_rng(seed)
    base = [features.get(name)[1] for name in features.images]
    out, ids = [], []
    for i in range(photos):
        d = base[i % len(base)]
        if i >= len(base):
            d = np.clip(d.astype(np.int16) + rng.integers(-3, 4, size=d.shape), 0, 255).astype(np.uint8)
        out.append(d)
        ids.append(f"w_{i // 3}")  # three photos per individual
    return out, np.array(ids), np.arange(photos) % 4


def measure(features, photos: int, queries: int, settings: dict, threads: int) -> dict:
    from flukeline.match.local_index import DescriptorIndex

    descriptors, ids, folds = catalogue(features, photos)
    start = time.perf_counter()
    index = DescriptorIndex(
        [f"p{i}" for i in range(photos)],
        ids,
        folds,
        descriptors,
        k=settings["lnbnn_k"],
        exact_below=settings["exact_below"],
        nprobe=settings["nprobe"],
        threads=threads,
    )
    build = time.perf_counter() - start
    sample = np.linspace(0, len(features) - 1, queries).astype(int)
    start = time.perf_counter()
    for i in sample:
        index.query(features.get(features.images[i])[1])
    per_query = (time.perf_counter() - start) / len(sample)
    return {
        "photos": photos,
        "descriptors": len(index),
        "descriptors_per_photo": len(index) / photos,
        "exact": index.exact,
        "index_bytes": index.nbytes,
        "build_s": round(build, 2),
        "ms_per_query": round(1000 * per_query, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    from flukeline.match.local_features import load_features
    from flukeline.match.settings import LocalPairSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="a run's photo feature table (features_train.npz)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    features = load_features(args.features)
    defaults = LocalPairSettings()
    settings = {"lnbnn_k": defaults.lnbnn_k, "exact_below": defaults.exact_below, "nprobe": defaults.nprobe}
    rows = [measure(features, n, args.queries, settings, args.threads) for n in sorted(args.sizes)]
    result = {
        "environment": environment(),
        "command": " ".join(["python -m bench.bench_catalogue_index", *sys.argv[1:]]),
        "features": str(args.features),
        "settings": settings,
        "rows": rows,
    }
    header = ["photos", "descriptors", "per photo", "search", "index MB", "build s", "ms / query", "peak RSS GB"]
    table = markdown_table(
        header,
        [
            [
                r["photos"],
                r["descriptors"],
                f"{r['descriptors_per_photo']:.0f}",
                "exact" if r["exact"] else "IVF 8-bit",
                f"{r['index_bytes'] / 1e6:.0f}",
                r["build_s"],
                r["ms_per_query"],
                r["peak_rss_gb"],
            ]
            for r in rows
        ],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "catalogue_index.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "catalogue_index.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
