"""Process-level settings shared by the stages: logging, CPU threads, device, seeding."""

from __future__ import annotations

import logging
import os
import random

import numpy as np


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
