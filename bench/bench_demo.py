"""Demo generator speed: images rendered per second, per worker, at a preset's resolution.

Usage: .venv/bin/python bench/bench_demo.py [--preset demo] [--workers 1 2] [--n-train 400]
Target (issue 3): at least 50 images/s per core at demo resolution.
"""

import argparse
import json
import tempfile
from pathlib import Path

from flukeline.data.demo.generate import generate_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-train", type=int, default=400, help="train images (test: a third of it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = {"n_train": args.n_train, "n_test": max(1, args.n_train // 3)}
    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_demo(
                Path(tmp) / "kaggle",
                Path(tmp) / "truth.csv",
                preset=args.preset,
                seed=args.seed,
                workers=workers,
                overrides=overrides,
            )
        images = summary["n_train"] + summary["n_test"]
        rows.append(
            {
                "preset": args.preset,
                "workers": workers,
                "images": images,
                "seconds": summary["seconds"],
                "images_per_s": round(images / summary["seconds"], 1),
                "images_per_s_per_worker": round(images / summary["seconds"] / workers, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
