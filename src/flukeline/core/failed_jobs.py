"""What a user reads last when a run fails: for each failed job, its rule and the reason its log
gives (our CLI's `flukeline <command>: error: ...` message, or a crash's exception line).

Snakemake ends a failed run with its own lines (the command line, "check log file(s) for error
details", the shutdown), and the default profile's `show-failed-logs` prints each failed job's log
above them; the Snakefile's `onerror` prints these lines after all that, so the reason is on the
screen at the end, not only in results/logs/. Standard library only: the Snakefile imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Snakemake's failure block in its own log (.snakemake/log/*.snakemake.log), as 9.x writes it.
_ERROR_IN_RULE = re.compile(r"^Error in rule (?P<rule>\S+):\s*$")
_JOB_LOG = re.compile(r"^\s+log: (?P<paths>.+?)(?: \(check log file\(s\) for error details\))?\s*$")
_WILDCARDS = re.compile(r"^\s+wildcards: (?P<wildcards>.+?)\s*$")
# cli.py's one-line (or multi-line) message for an InputError.
_CLI_ERROR = re.compile(r"^flukeline [\w-]+: error: ")
# A long list of bad rows is cut in the middle: its first and last rows stay readable.
MAX_REASON_LINES = 12


def failed_jobs(snakemake_log: str) -> list[dict]:
    """Each failed job in a Snakemake log's text: {"rule", "wildcards", "logs"} (logs: the job's
    log files, relative to the working directory), in the order they failed."""
    jobs: list[dict] = []
    current = None
    for line in snakemake_log.splitlines():
        match = _ERROR_IN_RULE.match(line)
        if match:
            current = {"rule": match["rule"], "wildcards": "", "logs": []}
            jobs.append(current)
            continue
        if current is None:
            continue
        if not line.startswith(" "):
            current = None  # the block ended
        elif match := _JOB_LOG.match(line):
            current["logs"] = [path.strip() for path in match["paths"].split(",") if path.strip()]
        elif match := _WILDCARDS.match(line):
            current["wildcards"] = match["wildcards"]
    return jobs


def failure_reason(job_log: str) -> list[str]:
    """The lines of a job's log that say why it failed: from the last `flukeline <command>: error:`
    line to the end; else a traceback's last line (the exception); else the last three lines."""
    lines = [line.rstrip() for line in job_log.splitlines() if line.strip()]
    if not lines:
        return []
    starts = [i for i, line in enumerate(lines) if _CLI_ERROR.match(line)]
    if starts:
        reason = lines[starts[-1] :]
    elif any(line.startswith("Traceback (most recent call last)") for line in lines):
        reason = lines[-1:]
    else:
        reason = lines[-3:]
    if len(reason) > MAX_REASON_LINES:
        head, tail = MAX_REASON_LINES // 2, MAX_REASON_LINES // 2 - 1
        reason = [*reason[:head], f"... ({len(reason) - head - tail} more lines in the log)", *reason[-tail:]]
    return reason


def failure_summary(snakemake_logs: Iterable[str | Path], workdir: str | Path = ".") -> list[str]:
    """The lines to print at the end of a failed run: per failed job, `rule <name> failed (log:
    <path>):` and the reason from its log. Empty when the Snakemake log names no failed job (the
    failure happened before any job ran: Snakemake's own message is then already the last)."""
    out: list[str] = []
    for snakemake_log in snakemake_logs:
        try:
            text = Path(snakemake_log).read_text(errors="replace")
        except OSError:
            continue
        for job in failed_jobs(text):
            name = job["rule"] + (f" ({job['wildcards']})" if job["wildcards"] else "")
            logs = ", ".join(job["logs"]) or "none"
            out.append(f"Flukeline: rule {name} failed (log: {logs}):")
            reason = []
            for path in job["logs"]:
                try:
                    reason += failure_reason((Path(workdir) / path).read_text(errors="replace"))
                except OSError:
                    continue
            out += [f"  {line}" for line in reason] or ["  (its log says nothing; see Snakemake's message above)"]
    return out
