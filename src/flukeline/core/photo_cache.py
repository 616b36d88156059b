"""Per-photo results kept across runs (`PhotoCache`), so that a new season's rerun computes only its
new photos: ingest's checks and hashes, detections, crops and embeddings are each stored under
`results/cache/<stage>/` by a key made of the photo's content (a SHA-1 of its bytes, or of the
crop's) and everything else that decides the result (the settings, the model file's hash, the
box or transform). A changed setting or model makes new keys, so an old result is never mixed in;
entries of older settings stay on disk until the folder is deleted (`rm -r results/cache` is
always safe: it only costs the time to recompute).

Entries live in packs under `<root>/packs/`: a data file of the entries' bytes one after the other,
and a Parquet table of their keys, each entry's small JSON header (its arrays' names, dtypes and
shapes), offset, size and CRC-32. A pack is written atomically when 1,000 entries are pending and
when the stage closes the cache. A lookup is one positional read, in whatever order the photos
come: one .npz per entry cost 0.3-0.6 ms each (opening the file and its zip directory), about
15 s of every cached stage at the 33k-photo catalogue (bench/results/scale.md), and reading
Parquet row groups cost a whole group per entry when a stage's photos came in another order than
they were written. A pack is never rewritten, so concurrent jobs that share a root (two members'
embeddings) each add their own. Entries of the older one-.npz-per-entry layout
(`<root>/<key[:2]>/<key>.npz`) are still read, and moved into a pack when read.

A damaged entry or pack is recomputed with a warning. `root=None` turns the cache off (get finds
nothing, put keeps nothing): the commands' `--cache` option is optional. Puts are kept in memory
until a flush: call `close()` (or use the cache as a context manager) when the stage is done, so
that a killed run loses at most the pending entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from flukeline.core.io import write_atomic

log = logging.getLogger(__name__)

# A pack is written when this many entries are pending (or their arrays hold PACK_BYTES): few
# enough files for a fast lookup, little lost when a run is killed.
PACK_ENTRIES = 1000
PACK_BYTES = 256 << 20
# A pack's two files: the entries' bytes, and the table of their keys and where each one is.
DATA_SUFFIX, KEYS_SUFFIX = ".data", ".keys.parquet"


def file_sha1(path) -> str:
    """SHA-1 of a file's bytes (photos, crops, model files)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_array(data: bytes) -> np.ndarray:
    """Bytes (an encoded PNG, a hash) as a uint8 array an entry can hold."""
    return np.frombuffer(data, dtype=np.uint8)


def encode_entry(arrays: Mapping[str, np.ndarray]) -> tuple[str, bytes]:
    """(header, data) of one entry: the header lists each array's name, dtype and shape, the data
    is their bytes one after the other (C order). Object arrays are refused, as np.load would."""
    header, parts = [], []
    for name, value in arrays.items():
        array = np.asarray(value)  # (not ascontiguousarray: it makes a 0-d array 1-d)
        if array.dtype.hasobject:
            raise TypeError(f"cache entry {name!r}: object arrays cannot be stored")
        header.append([name, array.dtype.str, list(array.shape)])
        parts.append(array.tobytes(order="C"))
    return json.dumps(header), b"".join(parts)


def decode_entry(header: str, data: bytes) -> dict[str, np.ndarray]:
    """The arrays of encode_entry's (header, data); each its own writable copy."""
    found, offset = {}, 0
    for name, dtype, shape in json.loads(header):
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        size = count * dtype.itemsize
        if offset + size > len(data):
            raise ValueError(f"entry {name!r} is truncated")
        found[name] = np.frombuffer(data, dtype, count=count, offset=offset).reshape(shape).copy()
        offset += size
    if offset != len(data):
        raise ValueError("entry has trailing bytes")
    return found


def stored_keys(root) -> set[str]:
    """The keys of every entry under a cache folder, of every stage and setting (packs and the
    older one-file-per-entry layout): what a folder holds, for logs and tests."""
    import pyarrow.parquet as pq

    root = Path(root)
    keys = {path.stem for path in root.glob("??/*.npz")}
    for listing in sorted((root / "packs").glob(f"*{KEYS_SUFFIX}")):
        keys.update(pq.read_table(listing, columns=["key"]).column("key").to_pylist())
    return keys


class PhotoCache:
    """Named arrays per photo under `root`, keyed by `stage`, `settings` and the photo's parts."""

    def __init__(self, root, stage: str, settings: Mapping | str | None = None):
        self.root = None if root is None else Path(root)
        text = settings if isinstance(settings, str) else json.dumps(settings or {}, sort_keys=True, default=str)
        self.prefix = f"{stage}|{text}"
        self.hits = 0
        self.misses = 0
        self._lock = threading.RLock()  # stages look photos up from worker threads
        self._index: dict[str, tuple[Path, str, int, int, int]] | None = None  # key -> where its bytes are
        self._files: dict[Path, object] = {}  # open data files, read with os.pread (thread-safe)
        self._pending: dict[str, tuple[str, bytes]] = {}
        self._pending_bytes = 0
        self._moved: list[Path] = []  # old-layout files whose entries wait in _pending

    def _count(self, hit: bool) -> None:
        with self._lock:
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
        """Where the older layout kept an entry (one .npz per entry); still read."""
        return self.root / key[:2] / f"{key}.npz"

    @property
    def pack_dir(self) -> Path:
        return self.root / "packs"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        found = self._find(key) if self.root is not None else None
        self._count(found is not None)
        return found

    def _find(self, key: str) -> dict[str, np.ndarray] | None:
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                where = self._load_index().get(key)
        if pending is not None:
            return decode_entry(*pending)
        if where is not None:
            found = self._from_pack(*where)
            if found is not None:
                return found
        return self._from_old_file(key)

    def _load_index(self) -> dict[str, tuple[Path, str, int, int, int]]:
        """key -> (data file, header, offset, size, CRC-32) over every pack under the root, from
        the packs' key tables (a pack's data file is only read entry by entry)."""
        if self._index is not None:
            return self._index
        import pyarrow.parquet as pq

        self._index = {}
        for listing in sorted(self.pack_dir.glob(f"*{KEYS_SUFFIX}")) if self.pack_dir.is_dir() else []:
            data = listing.with_name(listing.name[: -len(KEYS_SUFFIX)] + DATA_SUFFIX)
            try:
                table = pq.read_table(listing).to_pydict()
                for key, header, offset, size, crc in zip(
                    table["key"], table["header"], table["offset"], table["size"], table["crc32"], strict=True
                ):
                    self._index[key] = (data, header, offset, size, crc)
            except (OSError, ValueError, KeyError) as error:  # a damaged pack is only lost time
                log.warning("cache: ignoring the unreadable pack %s (%s)", listing, error)
        return self._index

    def _from_pack(self, data: Path, header: str, offset: int, size: int, crc: int) -> dict[str, np.ndarray] | None:
        try:
            with self._lock:
                handle = self._files.get(data)
                if handle is None:
                    handle = self._files[data] = open(data, "rb")  # noqa: SIM115 (kept open for the reads)
            raw = os.pread(handle.fileno(), size, offset)
            if len(raw) != size or zlib.crc32(raw) != crc:
                raise ValueError(f"the entry at byte {offset} is damaged or cut short")
            return decode_entry(header, raw)
        except (OSError, ValueError, TypeError) as error:  # a damaged pack is only lost time
            log.warning("cache: recomputing over an unreadable entry of %s (%s)", data, error)
            return None

    def _from_old_file(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                found = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError) as error:  # a damaged entry is only lost time
            log.warning("cache: recomputing over the unreadable entry %s (%s)", path, error)
            return None
        # Moved into this run's pack; the file is removed once the pack is written.
        self._add(key, found, moved=path)
        return found

    def put(self, key: str, **arrays: np.ndarray) -> None:
        if self.root is not None:
            self._add(key, arrays)

    def _add(self, key: str, arrays: Mapping[str, np.ndarray], moved: Path | None = None) -> None:
        header, data = encode_entry(arrays)
        with self._lock:
            self._pending[key] = (header, data)
            self._pending_bytes += len(data)
            if moved is not None:
                self._moved.append(moved)
            if len(self._pending) >= PACK_ENTRIES or self._pending_bytes >= PACK_BYTES:
                self.flush()

    def flush(self) -> None:
        """Write the pending entries as one pack (nothing when none are pending): their bytes one
        after the other in `<name>.data`, then `<name>.keys.parquet` (key, header, offset, size,
        CRC-32), each written atomically. The key table makes the pack visible, so a run killed
        between the two leaves a data file nobody reads."""
        if self.root is None:
            return
        with self._lock:
            if not self._pending:
                return
            import pyarrow as pa
            import pyarrow.parquet as pq

            keys = list(self._pending)
            headers = [self._pending[k][0] for k in keys]
            blobs = [self._pending[k][1] for k in keys]
            sizes = np.array([len(b) for b in blobs], np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            crcs = np.array([zlib.crc32(b) for b in blobs], np.int64)
            # Named by time, so that the index, read in name order, takes a key's newest entry (a
            # query's pairs are stored again when it gains pairs).
            stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
            data, listing = self.pack_dir / f"{stem}{DATA_SUFFIX}", self.pack_dir / f"{stem}{KEYS_SUFFIX}"

            def write_data(tmp: Path) -> None:
                with open(tmp, "wb") as handle:
                    for blob in blobs:
                        handle.write(blob)

            table = pa.table({"key": keys, "header": headers, "offset": offsets, "size": sizes, "crc32": crcs})
            write_atomic(data, write_data)
            write_atomic(listing, lambda tmp: pq.write_table(table, tmp))
            if self._index is not None:
                for key, header, offset, size, crc in zip(keys, headers, offsets, sizes, crcs):
                    self._index[key] = (data, header, int(offset), int(size), int(crc))
            for path in self._moved:
                path.unlink(missing_ok=True)
            self._pending, self._pending_bytes, self._moved = {}, 0, []

    def close(self) -> None:
        """Write what is pending; the cache stays usable (a later put starts a new pack)."""
        self.flush()

    def __enter__(self) -> PhotoCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_or_compute(self, keys: list[str] | None, n: int, compute, chunk: int) -> list[dict[str, np.ndarray]]:
        """Named arrays of items 0..n-1: from the cache where keys[i] has an entry; the others
        computed `chunk` at a time by compute(indices) -> one dict of arrays per index, and stored
        under their keys (written when done). keys None (the cache off): every item computed,
        nothing stored."""
        if keys is None:
            found = [None] * n
            with self._lock:
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
        self.flush()
        return found

    def summary(self, what: str) -> str:
        """'<what>: N from the cache <root>, M computed' for the log."""
        if self.root is None:
            return f"{what}: {self.misses} computed (no cache)"
        return f"{what}: {self.hits} from the cache {self.root}, {self.misses} computed"
