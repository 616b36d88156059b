"""flukeline.core.failed_jobs: the failed jobs in Snakemake's log and the reason their logs give,
printed by the Snakefile's onerror (the whole path through Snakemake: tests/workflow/test_robustness.py)."""

from flukeline.core.failed_jobs import MAX_REASON_LINES, failed_jobs, failure_reason, failure_summary

SNAKEMAKE_LOG = """\
[Mon Dec  7 10:08:27 2026]
Error in rule train_member:
    message: None
    jobid: 4
    input: results/data/train.parquet
    output: results/embed/round0/r18/fold0/model.safetensors
    log: results/logs/train/round0/r18/fold0.log (check log file(s) for error details)
    wildcards: round=0, member=r18, fold=0
    shell:
        python -m flukeline train ...
        (command exited with non-zero exit code)
Logfile results/logs/train/round0/r18/fold0.log:
Error in rule ingest:
    jobid: 0
    log: results/logs/ingest.log (check log file(s) for error details)
Shutting down, this might take some time.
"""


def test_failed_jobs_are_read_from_snakemakes_log_with_wildcards_and_logs():
    assert failed_jobs(SNAKEMAKE_LOG) == [
        {
            "rule": "train_member",
            "wildcards": "round=0, member=r18, fold=0",
            "logs": ["results/logs/train/round0/r18/fold0.log"],
        },
        {"rule": "ingest", "wildcards": "", "logs": ["results/logs/ingest.log"]},
    ]


def test_the_reason_is_our_cli_message_else_the_exception_line_else_the_tail():
    cli = "INFO start\nflukeline ingest: error: 2 bad rows:\ntrain.csv line 3: image 'a.heic' is bad\n"
    assert failure_reason(cli) == ["flukeline ingest: error: 2 bad rows:", "train.csv line 3: image 'a.heic' is bad"]
    crash = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: CUDA out of memory\n'
    assert failure_reason(crash) == ["RuntimeError: CUDA out of memory"]
    assert failure_reason("a\nb\n\nc\nd\n") == ["b", "c", "d"]
    assert failure_reason("") == []


def test_a_long_list_of_bad_rows_is_cut_in_the_middle():
    rows = [f"train.csv line {n}: image 'x{n}.jpg' is empty (0 bytes)" for n in range(2, 102)]
    reason = failure_reason("\n".join(["flukeline ingest: error: 100 bad image row(s):", *rows]))
    assert len(reason) == MAX_REASON_LINES
    assert reason[0].startswith("flukeline ingest: error:") and reason[-1] == rows[-1]
    assert reason[MAX_REASON_LINES // 2] == f"... ({101 - MAX_REASON_LINES + 1} more lines in the log)"


def test_summary_names_each_failed_job_and_its_reason(tmp_path):
    (tmp_path / "results/logs/train/round0/r18").mkdir(parents=True)
    (tmp_path / "results/logs/train/round0/r18/fold0.log").write_text(
        "Traceback (most recent call last):\nValueError: x\n"
    )
    snakemake_log = tmp_path / "run.snakemake.log"
    snakemake_log.write_text(SNAKEMAKE_LOG)
    assert failure_summary([snakemake_log, tmp_path / "absent.log"], workdir=tmp_path) == [
        "Flukeline: rule train_member (round=0, member=r18, fold=0) failed"
        " (log: results/logs/train/round0/r18/fold0.log):",
        "  ValueError: x",
        "Flukeline: rule ingest failed (log: results/logs/ingest.log):",  # its log is missing here
        "  (its log says nothing; see Snakemake's message above)",
    ]
