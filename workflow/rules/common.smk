# Shared helpers: config checks the schema cannot express, paths, and per-rule params.
from flukeline.core.config_rules import omniglot_zip, workflow_problems
from flukeline.core.runtime import scheduled_threads, usable_cpus

# Keys that must agree with each other and files that must exist, checked after the Snakefile's
# schema check has filled in the defaults; every problem in one error. They live in the package
# (flukeline.core.config_rules: no torch, unit-tested).
_problems = workflow_problems(config, workflow.basedir)
if _problems:
    raise WorkflowError("config.yaml: " + "; ".join(_problems))
# Presets merge over config.yaml (dicts merge, lists replace): `members` is a catalogue that
# presets extend, and the `active_members` list says which of them train.
ACTIVE = {name: config["embed"]["members"][name] for name in config["embed"]["active_members"]}


def size_name(size):
    """[128, 64] -> '128x64' (the wildcard used in align/embed paths)."""
    return f"{size[0]}x{size[1]}"


def by_attempt(base):
    """A mem_mb/runtime resource that doubles with each retry (`retries:` in profiles/slurm), so
    a job killed for memory or time is resubmitted with more. The bases are the demo preset's
    measured peak memory and wall time (results/benchmarks/, 2 CPU cores) with headroom."""
    return lambda wildcards, attempt: base * attempt


def params_json(*values):
    """Serialise the config values a rule consumes, keys sorted, so that Snakemake's params
    trigger reruns a rule exactly when one of its own settings changes."""
    return json.dumps(values[0] if len(values) == 1 else list(values), sort_keys=True)


SOURCE = config["data"]["source"]
DEMO = SOURCE == "demo"
OMNIGLOT = SOURCE == "omniglot"
# demo and omniglot: the data root is written by a rule (and the test identities beside it).
# (ANNOTATIONS below: config_rules checks detect.method learned against the same three cases.)
GENERATED_DATA = DEMO or OMNIGLOT
if DEMO:
    DEMO_DIR = f"resources/demo/{config['data']['demo']['preset']}-seed{config['seed']}"
    DATA_ROOT = f"{DEMO_DIR}/kaggle"
    # Test identities live outside the data root: only the evaluate rule reads them.
    TEST_TRUTH = f"{DEMO_DIR}/test_truth.csv"
    ANNOTATIONS = {
        "masks": "annotations/masks",
        "keypoints": "annotations/keypoints.csv",
        "boxes": "annotations/boxes.csv",
    }
elif OMNIGLOT:
    # A relative zip path is relative to the project folder (the Snakefile's), not the working directory.
    OMNIGLOT_ZIP = str(omniglot_zip(config, workflow.basedir))
    OMNIGLOT_DIR = f"resources/omniglot/seed{config['seed']}"
    DATA_ROOT = f"{OMNIGLOT_DIR}/kaggle"
    TEST_TRUTH = f"{OMNIGLOT_DIR}/test_truth.csv"
    ANNOTATIONS = {}  # no masks, keypoints or boxes: run with detect.method none or threshold
else:
    DATA_ROOT = config["data"]["root"]
    TEST_TRUTH = None
    ANNOTATIONS = {k: v for k, v in config["data"]["annotations"].items() if v}

# Threads against the real CPUs (core.runtime.scheduled_threads): run locally with --cores above
# the machine's CPUs (README's `--cores 8` on a 2-CPU laptop), every rule's threads are scaled so
# that heavy jobs queue instead of sharing the CPUs; on a cluster each job has its own CPUs.
CPUS = usable_cpus()


def _local_cores():
    """--cores of a local run; None on a cluster executor, and for commands given no --cores
    (--unlock, --report, a cluster profile), where workflow.cores raises."""
    if not workflow.local_exec:
        return None
    try:
        return workflow.cores
    except WorkflowError:
        return None


LOCAL_CORES = _local_cores()
if LOCAL_CORES and LOCAL_CORES > CPUS:
    print(
        f"Flukeline: --cores {LOCAL_CORES} on a machine with {CPUS} CPUs: jobs are scheduled as on"
        f" {CPUS} (threads scaled by {LOCAL_CORES / CPUS:g}; each job uses at most {CPUS} threads)",
        file=sys.stderr,
    )


def cpu_threads(wanted):
    """`threads:` of every rule: `wanted` threads, scaled when --cores exceeds the CPUs."""
    return scheduled_threads(wanted, LOCAL_CORES, CPUS)


MEMBERS = sorted(ACTIVE)
CV_FOLDS = sorted(config["embed"]["cv_folds"])


def member_size(member):
    return size_name(config["embed"]["members"][member]["size"])
