"""One-off: the 1,000-photo season against the finished 32,321-photo run again, from a frozen
worktree of main at /work/exp. The base run's caches were first moved into packs
(pack_base_cache.py), its detect entries given their mask's area (detect_area.py) and its LNBNN
index kept from a first rerun (season-reuse3), as a base run with this code would have left them;
then a fresh hard-linked copy (argv[1]: season-reuse4 ... season-reuse7) reruns with the season
config (default retrain policy)."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "/work/exp")
from bench import bench_scale as bs  # noqa: E402
from bench.common import environment, seed_workdir  # noqa: E402
from bench.suite import Reference  # noqa: E402

ref = Reference(Path("/tmp/s33/bw/demo"), False, None, 2, Path("/work/exp/config.yaml"))
top = Path("/tmp/s33/bw/scale/kaggle-32321")
configs = Path("/tmp/s33/bw/scale/configs")
logs = Path("/tmp/s33/bw/scale/logs")
env = environment()
folder = top / (sys.argv[1] if len(sys.argv) > 1 else "season-reuse3")
shutil.rmtree(folder, ignore_errors=True)
seed_workdir(top / "run", folder)
shutil.rmtree(folder / "results" / "benchmarks")
run = bs._run(ref, folder, [configs / "season.yaml"], logs / f"{folder.name}.log")
held = sorted(p.name for p in (top / "season_photos").iterdir())
import pandas as pd  # noqa: E402

truth = pd.read_csv(top / "gen" / "test_truth.csv")
out = {**run, "score": bs._season_score(folder, truth, held), "logged": bs._reuse_lines(folder), "environment": env}
out["command"] = (
    "PYTHONPATH=src:. python bench/results/scale_33k/season3.py "
    + folder.name
    + " (main "
    + env.get("git_commit", "?")
    + ")"
)
Path(f"/tmp/s33/out/{folder.name}.json").write_text(json.dumps(out, indent=2, default=str))
print(json.dumps({"wall": run["run"]["wall_s"], "cpu": run["run"]["cpu_s"], "score": out["score"]}), flush=True)
