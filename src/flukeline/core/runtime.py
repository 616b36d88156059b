"""Process-level settings shared by the stages: logging, CPU threads, device, seeding, and the
one worker pool every stage uses (parallel_map)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(threads: int) -> int:
    """Snakemake may grant more threads than the machine has (--cores 8 on 2 cores); more
    workers than CPUs only adds contention."""
    return max(1, min(int(threads), usable_cpus()))


def scheduled_threads(wanted: int, cores: int | None, cpus: int) -> int:
    """The threads a rule declares to Snakemake's local scheduler. Snakemake counts threads
    against --cores, not against the machine: `--cores 8` on 2 CPUs ran both 4-thread member
    trainings side by side on 2 CPUs, each twice as slow (lite0 603 s against 259 s alone).
    When --cores exceeds the CPUs, a rule's threads are scaled by cores / CPUs, so the scheduler's
    budget of --cores stands for the real CPUs and heavy jobs queue instead of contending; the
    command then caps its own threads at the CPUs (worker_count). With --cores at or below the
    CPUs, or `cores=None` (cluster execution, where each job gets its own CPUs), the rule keeps
    what it declares."""
    wanted = max(1, int(wanted))
    if not cores or cores <= cpus:
        return wanted
    return min(int(cores), -(-wanted * int(cores) // max(1, cpus)))


def configure_torch(threads: int, seed: int | None = None):
    import torch

    torch.set_num_threads(worker_count(threads))
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    return torch


def select_device():
    """CUDA when present, else CPU (CI and tests run on the CPU)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    threads: int,
    *,
    processes: bool = False,
    chunksize: int = 1,
    initializer: Callable[[], None] | None = None,
    spawn: bool = False,
) -> list[R]:
    """`[function(item) for item in items]`, in order, on up to `threads` workers (never more than
    the CPUs this process may use, see worker_count): threads for work that releases the GIL
    (OpenCV, image decoding, file I/O), processes for pure-Python or numpy-bound work. One worker,
    or one item, runs in this process with no pool. `spawn` starts fresh interpreters instead of
    forking, which is safe when the caller already runs threads (torch, Snakemake); `initializer`
    runs once in each worker process."""
    items = list(items)
    workers = min(worker_count(threads), max(1, len(items)))
    if workers <= 1:
        return [function(item) for item in items]
    if not processes:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(function, items))
    context = multiprocessing.get_context("spawn") if spawn else None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer) as pool:
        return list(pool.map(function, items, chunksize=max(1, int(chunksize))))
