"""One-off: the 32,321-photo base run's caches (written one .npz per entry, before packs) moved
into packs, as a base run with packs would have left them, before the season is rerun against it
(season3.py). Every stage's entries are read and moved by core.photo_cache itself."""
import sys
import time
from pathlib import Path

from flukeline.core.photo_cache import PhotoCache, stored_keys

root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s33/bw/scale/kaggle-32321/run/results/cache")
for stage in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "models"):
    start = time.perf_counter()
    cache = PhotoCache(stage, "any")  # the stage and settings only make keys: files are found by key
    files = sorted(stage.glob("??/*.npz"))
    for path in files:
        cache.get(path.stem)
    cache.close()
    print(f"{stage.name}: {len(files)} entries into packs in {time.perf_counter() - start:.0f} s;"
          f" {len(stored_keys(stage))} keys, {len(list(stage.glob('??/*.npz')))} files left", flush=True)
