"""One-off: the 32,321-photo base run's caches (written one .npz per entry, before packs) moved
into packs, as a base run with packs would have left them, before the season is rerun against it.
Every stage's entries are read and moved by core.photo_cache itself. (An interim pack layout of one
Parquet table per pack, never released, is converted too.)"""

import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from flukeline.core.photo_cache import KEYS_SUFFIX, PhotoCache, decode_entry, stored_keys

root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s33/bw/scale/kaggle-32321/run/results/cache")
for stage in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "models"):
    start = time.perf_counter()
    cache = PhotoCache(stage, "any")  # the stage and settings only make keys: files are found by key
    files = sorted(stage.glob("??/*.npz"))
    for path in files:
        cache.get(path.stem)
    interim = [p for p in sorted((stage / "packs").glob("*.parquet")) if not p.name.endswith(KEYS_SUFFIX)]
    for pack in interim:
        table = pq.read_table(pack).to_pydict()
        for key, header, data in zip(table["key"], table["header"], table["data"], strict=True):
            cache.put(key, **decode_entry(header, data))
    cache.close()
    for pack in interim:
        pack.unlink()
    print(
        f"{stage.name}: {len(files)} entries and {len(interim)} interim packs into packs in"
        f" {time.perf_counter() - start:.0f} s; {len(stored_keys(stage))} keys, {len(list(stage.glob('??/*.npz')))}"
        " files left",
        flush=True,
    )
