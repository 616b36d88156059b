"""One-off: the 32,321-photo base run's detect cache entries given their mask's area, as a base run
with the area kept would have written them (a season's rerun stores it itself, once, for every old
entry it reads without one; this spares the measured season that one-time upgrade)."""

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from flukeline.core.photo_cache import PhotoCache, stored_keys

root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/s33/bw/scale/kaggle-32321/run/results/cache/detect")
start, upgraded = time.perf_counter(), 0
with PhotoCache(root, "any") as cache:
    for key in sorted(stored_keys(root)):
        entry = cache.get(key)
        if "area" not in entry:
            entry["area"] = np.array(int((cv2.imdecode(entry["mask_png"], cv2.IMREAD_GRAYSCALE) > 0).sum()))
            cache.put(key, **entry)
            upgraded += 1
print(f"{upgraded} detect entries given their area in {time.perf_counter() - start:.0f} s", flush=True)
