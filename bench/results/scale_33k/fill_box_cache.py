"""One-off: the zero-shot box reference's per-photo cache (added after the 33k run started, commit
on main) filled from the finished 32,321-photo run's own box embeddings (same model file, boxes and
224 x 224 input: the values the cached code computes, the code being unchanged otherwise), so that
the new season's rerun with the new code measures a catalogue whose cache is filled, as a run made
with that code would have left it."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, "/work/main/src")
from flukeline.core.photo_cache import PhotoCache, file_sha1  # noqa: E402
from flukeline.evaluate.box_zero_shot import photo_boxes  # noqa: E402

run = Path(sys.argv[1]) / "results"
model = run / "baseline/zero_shot_1nn/model.safetensors"
train, test = pd.read_parquet(run / "data/train.parquet"), pd.read_parquet(run / "data/test.parquet")
photos = photo_boxes(train, test, pd.read_parquet(run / "detect/boxes.parquet"))
table = pd.read_parquet(run / "baseline/zero_shot_box_1nn/embeddings.parquet").set_index(["image", "split"])
cache = PhotoCache(run / "cache/zero_shot_box", "zero_shot_box", [file_sha1(model), [224, 224]])
corners = photos[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.int64)
for (image, split, sha1), box in zip(photos[["image", "split", "sha1"]].itertuples(index=False), corners):
    cache.put(cache.key(sha1, *box), embedding=np.asarray(table.loc[(image, split), "embedding"], np.float32))
print(f"filled {len(photos)} entries under {cache.root}")
