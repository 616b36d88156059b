"""core.runtime: the threads a rule declares to Snakemake (scheduled_threads) and the workers a
job starts (worker_count)."""

import pytest

from flukeline.core.runtime import scheduled_threads, worker_count


@pytest.mark.parametrize(
    ("wanted", "cores", "cpus", "expected"),
    [
        (4, 2, 2, 4),  # --cores at the CPUs: Snakemake itself caps 4 at 2
        (4, 8, 2, 8),  # README's --cores 8 on 2 CPUs: a training takes the whole budget, alone
        (2, 8, 2, 8),  # 2 threads are the whole machine
        (1, 8, 2, 4),  # two 1-thread jobs at a time, as with --cores 2
        (4, 64, 64, 4),  # a large machine: sixteen 4-thread jobs side by side
        (4, 12, 8, 6),  # 12 cores on 8 CPUs: scaled by 1.5, rounded up
        (4, None, 2, 4),  # cluster execution: every job has its own CPUs
        (0, 8, 2, 4),  # a rule never declares fewer than one thread
    ],
)
def test_threads_are_scaled_only_when_cores_exceed_the_cpus(wanted, cores, cpus, expected):
    assert scheduled_threads(wanted, cores, cpus) == expected


def test_scaled_jobs_never_sum_to_more_than_the_cpus():
    # Whatever mix of rules runs at once within the --cores budget, the real threads (each job
    # caps at the CPUs) times the scale factor fit the budget: at most `cpus` CPUs busy.
    cores, cpus = 8, 2
    declared = {wanted: scheduled_threads(wanted, cores, cpus) for wanted in (1, 2, 4)}
    for wanted, threads in declared.items():
        jobs_at_once = cores // threads
        assert jobs_at_once * min(wanted, cpus) <= cpus


def test_a_job_never_starts_more_workers_than_its_cpus(monkeypatch):
    monkeypatch.setattr("flukeline.core.runtime.usable_cpus", lambda: 2)
    assert worker_count(8) == 2
    assert worker_count(1) == 1
    assert worker_count(0) == 1
