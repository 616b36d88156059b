"""The benchmark suite, one command: `.venv/bin/python -m bench [--quick] [--only PARTS] [--out DIR]`.

Parts (run in this order; each writes <out>/<part>.json and <part>.md, and <out>/summary.md
collects every part's table found in <out>):
  speed        per-stage wall time, CPU s and peak RSS of the reference demo run on --cores (2), from
               Snakemake's benchmark files, beside README's command (--readme-cores, 8) from an
               empty folder; images/s of detection, alignment and embedding
  incremental  wall time of `snakemake` rerun in the reference's folder with no change, and after
               editing one match key (match.templates)
  accuracy     MAP@5, top-1 and new_whale F1 (validation fold and demo test) of the all-new_whale
               and softmax-classifier baselines, each member, the ensemble, and ablations (no
               alignment, flip-as-new-identity, flip fusion, pseudo-labels, ImageNet init), each ablation a
               hard-linked copy of the reference folder with one config override, so that only
               the stages it changes rerun
  detector     held-out mask IoU, box IoU, PCK and training time of the learned detector with its
               U-Net encoder from ImageNet (offline) or from scratch, and the LCNet encoder
  search       bench/bench_search.py: 10k queries x 100k and 1M gallery, FAISS exact, HNSW, IVF,
               NumPy brute force, and the matmul ceiling measured in the same run
  local        the local-feature matchers (bench/bench_local.py): the ensemble with match.local.method
               none / sift / aliked_lightglue / disk_lightglue on the demo reference and on Omniglot
               seed 0 (hard-linked copies; MAP@5, known top-1, new_whale F1, the fitted weight, pairs
               and seconds), and each matcher alone on the manta photos (--local-shortlist,
               --local-features)
  peers        bench/bench_peers.py: the reference run (each member, the ensemble, the references)
               beside Wildbook's HotSpotter (ibeis 2.6.0 in its own environment, bench/peers) on the
               same catalogue and queries, and the matchers alone on the mantas and Omniglot beside it
               (--quick: our rows of the tiny run only, no HotSpotter)
  scale        bench/bench_scale.py (not in the default list: hours at full size): the default workflow
               on the kaggle preset (Kaggle 2019's identity sizes, 1050-px photos) at --scale-photos
               sizes, per stage wall, CPU s and peak RSS and the fitted growth exponent; then
               --season-photos new photos against the largest (`flukeline add-season`) without and
               with retraining
  margin       bench/bench_margin_loss.py: one frozen-head training step's time against the classes,
               with every class in the softmax and with sampled classes (Partial FC), and the epoch
  real         real photos (bench/real_data.py): the omniglot preset for split seeds 0 and 1
               (references without training, every member, the ensemble; validation and test
               MAP@5 and known-identity top-1), and the manta photos through gallery-new/identify
The reference run is the demo DAG (config.yaml) in <workdir>/reference, run once and reused;
--quick: the tiny preset cut to one member and one epoch, and bench_search --quick (minutes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from bench import bench_local, bench_margin_loss, bench_peers, bench_scale, real_data, suite
from bench.common import REPO, environment, write_part

PARTS = ["speed", "incremental", "accuracy", "detector", "search", "margin", "real", "local", "peers", "scale"]
# What `python -m bench` runs without --only: scale is asked for by name (its full size takes hours).
DEFAULT_PARTS = [part for part in PARTS if part != "scale"]


def summary(out: Path, command: str) -> str:
    """summary.md: every part's table found in `out`, with the machine and the command."""
    sections = []
    for part in ["real", "peers", "local", "accuracy", "detector", "speed", "incremental", "search", "margin", "scale"]:
        if (out / f"{part}.json").exists() and (out / f"{part}.md").exists():
            meta = json.loads((out / f"{part}.json").read_text())
            when = meta.get("environment", {}).get("date") or ""
            sections.append(
                f"### {part.capitalize()}\n\n{(out / f'{part}.md').read_text().rstrip()}\n"
                + (f"\n(measured {when})\n" if when else "")
            )
    env = environment()
    head = (
        f"Benchmarks: `{command}`; machine: {env['cpu']}, {env['cores_usable']} usable cores; "
        f"commit {env['git_commit']}.\n"
    )
    text = head + "\n" + "\n".join(sections)
    (out / "summary.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="toy scale, every part and row (CI)")
    parser.add_argument("--only", default=",".join(DEFAULT_PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results, bench/results/quick with --quick)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/flukeline-bench"),
        help="work folder for the Snakemake runs (outside the checkout; reused between calls)",
    )
    parser.add_argument(
        "--seed-from",
        type=Path,
        default=None,
        help="a finished run of the same config to start the reference from (hard links; "
        "the tests pass the shared tiny run)",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--scale-photos",
        default="2000,8000,33321",
        help="scale: catalogue sizes (train + test photos) of the kaggle preset, comma-separated",
    )
    parser.add_argument(
        "--season-photos", type=int, default=1000, help="scale: new photos against the largest size (0: none)"
    )
    parser.add_argument(
        "--season-retrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale: also rerun the new season with retrain: always (at full size that run alone takes hours)",
    )
    parser.add_argument(
        "--readme-cores",
        type=int,
        default=8,
        help="speed: also time README's command with this --cores from an empty folder (0: skip; skipped with --quick)",
    )
    parser.add_argument(
        "--local-shortlist",
        type=int,
        default=10,
        help="local: gallery images matched per query for every method (LightGlue ~0.1 s per pair on 2 CPU cores)",
    )
    parser.add_argument("--local-features", type=int, default=256, help="local: keypoints per crop for every method")
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "config.yaml",
        help="the reference config (default config.yaml); a snapshot is used for every run",
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; choose from {PARTS}")
    workdir = args.workdir.resolve() / ("quick" if args.quick else "demo")
    if REPO in workdir.parents or workdir == REPO:
        parser.error(f"--workdir {args.workdir} is inside the checkout {REPO}; use a folder outside it")
    out = (args.out or REPO / "bench" / "results" / ("quick" if args.quick else "")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    reference = suite.Reference(
        workdir,
        args.quick,
        args.seed_from,
        args.cores,
        args.config.resolve(),
        readme_cores=0 if args.quick else args.readme_cores,
    )
    # --quick: the local part's rows on the tiny run with two pairs per query (numbers meaningless).
    reference.local_shortlist = 2 if args.quick else args.local_shortlist
    reference.local_features = args.local_features
    reference.scale_photos = [int(n) for n in args.scale_photos.split(",") if n.strip()]
    reference.season_photos = args.season_photos
    reference.season_retrain = args.season_retrain
    for part in [p for p in PARTS if p in parts]:
        started = time.perf_counter()
        print(f"== {part}", flush=True)
        if part == "search":
            suite.search(out, args.quick, args.cores)  # bench_search writes search.json/.md itself
        else:
            runners = {
                "real": real_data.real,
                "local": bench_local.local,
                "peers": bench_peers.peers,
                "scale": bench_scale.scale,
                "margin": bench_margin_loss.margin,
            }
            runner = runners.get(part) or getattr(suite, part)
            result, table = runner(reference)
            result["command"] = command
            write_part(out, part, result, table)
            print(table, flush=True)
        print(f"== {part} done in {time.perf_counter() - started:.0f} s", flush=True)
        summary(out, command)
    print(f"summary: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
