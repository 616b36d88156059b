# Flukeline: identify individual animals from photographs.
#   snakemake --cores 8 results/submission.csv
# Stages (one rules file each): data -> detect -> align -> embed -> match; then review and export.
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: Path(workflow.basedir) / "config.yaml"


from flukeline.core.config_check import config_problems
from flukeline.core.failed_jobs import failure_summary

# Our own messages first (key path + problem); Snakemake's validate then fills in the defaults.
_problems = config_problems(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
if _problems:
    raise WorkflowError("config: " + "; ".join(_problems))
validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# Rules call the package's CLI with the interpreter that runs Snakemake, so an activated or
# un-activated venv behaves the same, locally and on cluster nodes.
FLUKELINE = f"{shlex.quote(sys.executable)} -m flukeline"


# `snakemake --report results/report.html`: the outputs marked report(...) by stage, with this description.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/match.smk"
include: "workflow/rules/local.smk"
include: "workflow/rules/decisions.smk"
include: "workflow/rules/gallery.smk"
include: "workflow/rules/review.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        "results/submission.csv",
        "results/metrics.json",
        "results/gallery/gallery.json",
        "results/metrics.html",
        "results/data/summary.png",
        "results/review/index.html",
        "results/decisions.csv",
        "results/data/demo_contact_sheet.png" if DEMO else [],
        "results/detect/metrics.json" if config["detect"]["method"] == "learned" else [],
        f"{EXPORT_DIR}/summary.json" if EXPORT_REPORT else [],


# The warnings of evaluate (results/metrics.json), where a user sees them: at the end of the run.
onsuccess:
    _metrics = Path("results/metrics.json")
    if _metrics.is_file():
        for _warning in json.loads(_metrics.read_text()).get("warnings", []):
            print(f"\nFlukeline warning: {_warning}\n(also in results/metrics.html)", file=sys.stderr)


# A failed run ends with each failed job's rule and the reason its log gives, below Snakemake's
# shutdown lines (the default profile prints the whole log above them: profiles/default).
onerror:
    for _line in failure_summary(log):
        print(_line, file=sys.stderr)
