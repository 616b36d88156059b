"""Per-photo results kept across runs (`PhotoCache`), so that a new season's rerun computes only its
new photos: ingest's checks and hashes, detections, crops and embeddings are each stored under
`results/cache/<stage>/` by a key made of the photo's content (a SHA-1 of its bytes, or of the
crop's) and everything else that decides the result (the settings, the model file's hash, the
box or transform). A changed setting or model makes new keys, so an old result is never mixed in;
entries of older settings stay on disk until the folder is deleted (`rm -r results/cache` is
always safe: it only costs the time to recompute).

An entry is one .npz of named arrays at `<root>/<key[:2]>/<key>.npz`, written atomically; a
damaged entry is recomputed with a warning. `root=None` turns the cache off (get finds nothing,
put keeps nothing): the commands' `--cache` option is optional.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from flukeline.core.io import write_atomic

log = logging.getLogger(__name__)


def file_sha1(path) -> str:
    """SHA-1 of a file's bytes (photos, crops, model files)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_array(data: bytes) -> np.ndarray:
    """Bytes (an encoded PNG, a hash) as a uint8 array an .npz entry can hold."""
    return np.frombuffer(data, dtype=np.uint8)


class PhotoCache:
    """Named arrays per photo under `root`, keyed by `stage`, `settings` and the photo's parts."""

    def __init__(self, root, stage: str, settings: Mapping | str | None = None):
        self.root = None if root is None else Path(root)
        text = settings if isinstance(settings, str) else json.dumps(settings or {}, sort_keys=True, default=str)
        self.prefix = f"{stage}|{text}"
        self.hits = 0
        self.misses = 0
        self._count_lock = threading.Lock()  # stages look photos up from worker threads

    def _count(self, hit: bool) -> None:
        with self._count_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key(self, *parts) -> str:
        """The entry's key: the stage, the settings and the photo's parts (content hash, box, ...)."""
        return hashlib.sha1("|".join([self.prefix, *map(str, parts)]).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        if self.root is None:
            self._count(False)
            return None
        path = self.path(key)
        if not path.is_file():
            self._count(False)
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                found = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError) as error:  # a damaged entry is only lost time
            log.warning("cache: recomputing over the unreadable entry %s (%s)", path, error)
            self._count(False)
            return None
        self._count(True)
        return found

    def put(self, key: str, **arrays: np.ndarray) -> None:
        if self.root is None:
            return

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), write)

    def get_or_compute(self, keys: list[str] | None, n: int, compute, chunk: int) -> list[dict[str, np.ndarray]]:
        """Named arrays of items 0..n-1: from the cache where keys[i] has an entry; the others
        computed `chunk` at a time by compute(indices) -> one dict of arrays per index, and stored
        under their keys. keys None (the cache off): every item computed, nothing stored."""
        if keys is None:
            found = [None] * n
            with self._count_lock:
                self.misses += n
        else:
            found = [self.get(key) for key in keys]
        todo = [i for i, entry in enumerate(found) if entry is None]
        for start in range(0, len(todo), chunk):
            rows = todo[start : start + chunk]
            for i, entry in zip(rows, compute(rows), strict=True):
                found[i] = entry
                if keys is not None:
                    self.put(keys[i], **entry)
        return found

    def summary(self, what: str) -> str:
        """'<what>: N from the cache <root>, M computed' for the log."""
        if self.root is None:
            return f"{what}: {self.misses} computed (no cache)"
        return f"{what}: {self.hits} from the cache {self.root}, {self.misses} computed"
