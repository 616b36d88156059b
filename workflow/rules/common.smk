# Everything the stages' .smk files use besides their rules (config checks the schema cannot
# express, the sources and paths, threads, each step's params), so that data.smk ... review.smk
# hold rules only and none depends on another's definitions or on the include order. (Snakemake's
# --lint flags a file with both a def and the word rule followed by a colon on one line.)
# A step's params are its settings class's pick of the config (flukeline.*.settings): exactly the
# keys the step consumes, so an edit to any other key never reruns it.
from flukeline.align.settings import AlignSettings
from flukeline.core.config_rules import omniglot_zip, workflow_problems
from flukeline.core.runtime import scheduled_threads, usable_cpus
from flukeline.data.catalogue_rows import latest_catalogue
from flukeline.data.settings import IngestSettings
from flukeline.detect.settings import BoxSettings, DetectorTrainingSettings
from flukeline.embed.settings import MemberEntry, MemberSettings
from flukeline.export.settings import ExportSettings
from flukeline.match.settings import (
    DecisionSettings,
    EnsembleSettings,
    LocalFeatureSettings,
    LocalMatchSettings,
    SearchSettings,
)

# Keys that must agree with each other and files that must exist, checked after the Snakefile's
# schema check has filled in the defaults; every problem in one error. They live in the package
# (flukeline.core.config_rules: no torch, unit-tested).
_problems = workflow_problems(config, workflow.basedir)
if _problems:
    raise WorkflowError("config.yaml: " + "; ".join(_problems))


def size_name(size):
    """[128, 64] -> '128x64' (the wildcard used in align/embed paths)."""
    return f"{size[0]}x{size[1]}"


def by_attempt(base):
    """A mem_mb/runtime resource that doubles with each retry (`retries:` in profiles/slurm), so
    a job killed for memory or time is resubmitted with more. The bases are the demo preset's
    measured peak memory and wall time (results/benchmarks/, 2 CPU cores) with headroom."""
    return lambda wildcards, attempt: base * attempt


def params_json(*values):
    """Serialise the config values a step consumes, keys sorted, so that Snakemake's params
    trigger reruns a job exactly when one of its own settings changes."""
    return json.dumps(values[0] if len(values) == 1 else list(values), sort_keys=True)


def quoted(paths):
    """Paths as one shell word each, space-separated (a command's list argument)."""
    return " ".join(shlex.quote(p) for p in paths)


# --- Threads ---------------------------------------------------------------------------------
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


# Per-photo results and trained models kept across runs (flukeline.core.photo_cache, model_reuse):
# a rerun after new photos arrive computes only theirs. Keyed by content and settings, so never
# stale; `rm -r results/cache` is always safe (it costs the recomputation). Not Snakemake outputs.
PHOTO_CACHE = {
    stage: f"results/cache/{stage}"
    for stage in (
        "ingest",
        "detect",
        "align",
        "embed",
        "frozen_trunk",
        "local_features",
        "local_crop_features",
        "local_match",
        "pixel",
        "zero_shot_box",
    )
}
MODEL_STORE = "results/cache/models"


# --- Data (data.smk) -------------------------------------------------------------------------
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

# The converter's settings (the zip is the omniglot_dataset job's input, not a setting).
OMNIGLOT_SETTINGS = {k: v for k, v in config["data"]["omniglot"].items() if k != "zip"}

# The ingest step's data.* keys (the rest of data.* chooses the inputs and paths above and below).
INGEST = IngestSettings.pick(config["data"])

# data.catalogue: the newest version of the catalogue of confirmed photos (`flukeline accept`),
# whose rows ingest adds to train.csv's (a new version reruns ingest).
CATALOGUE = latest_catalogue(config["data"]["catalogue"])


def ingest_input(wildcards):
    # A generated root is a rule output (a directory); a user's data root is an existing folder.
    inputs = {"root": DATA_ROOT} if GENERATED_DATA else {"train_csv": f"{DATA_ROOT}/train.csv"}
    if not GENERATED_DATA:
        # The test photos' order and metadata (date, place, side; flukeline.data.metadata): an edit reruns ingest.
        for key, name in (("sample_submission", "sample_submission.csv"), ("test_metadata", "test.csv")):
            if Path(DATA_ROOT, name).is_file():
                inputs[key] = f"{DATA_ROOT}/{name}"
    return inputs | ({"catalogue": str(CATALOGUE)} if CATALOGUE else {})


# --- Detect (detect.smk) ---------------------------------------------------------------------
LEARNED_DETECT = config["detect"]["method"] == "learned"
DETECT_OUTPUTS = {
    "boxes": "results/detect/boxes.parquet",
    "keypoints": "results/detect/keypoints.parquet",
    "masks": "results/detect/masks.parquet",
}
# The classical detectors (threshold, none) and what a gallery photo's detection needs.
CLASSICAL_DETECT = {"method": config["detect"]["method"], "min_area_fraction": config["detect"]["min_area_fraction"]}
DETECTOR_TRAINING = DetectorTrainingSettings.pick(
    {**config["detect"]["model"], "keypoints": config["detect"]["keypoints"]}
)
BOXES = BoxSettings.pick({**config["detect"]["boxes"], "min_area_fraction": config["detect"]["min_area_fraction"]})

# --- Align (align.smk) -----------------------------------------------------------------------
ALIGN_SIZES = [size_name(s) for s in config["align"]["sizes"]]
# The transform step's keys (the margin and padding only shape its contact sheet).
ALIGN = AlignSettings.pick(config["align"])

# --- Embed (embed.smk) -----------------------------------------------------------------------
# Presets merge over config.yaml (dicts merge, lists replace): `members` is a catalogue that
# presets extend, and the `active_members` list says which of them train.
ACTIVE = {name: config["embed"]["members"][name] for name in config["embed"]["active_members"]}
MEMBERS = sorted(ACTIVE)
CV_FOLDS = sorted(config["embed"]["cv_folds"])
FOLDS = ",".join(map(str, CV_FOLDS))


def member_size(member):
    return size_name(config["embed"]["members"][member]["size"])


def embed_dir(round_, member):
    """A member's models and embeddings of one pseudo-label round (one fold<k>/ each)."""
    return f"results/embed/round{round_}/{member}"


def member_align(wildcards):
    """The aligned crops at the member's size (its training and its embeddings read them)."""
    return f"results/align/{member_size(wildcards.member)}/align.parquet"


def train_params(wildcards):
    """This member's settings over the shared embed settings: another member's edit leaves it alone.
    Its ensemble `weight` is the match stage's (ensemble rule), not training's; which members and
    folds exist (members, active_members, cv_folds) shapes the DAG, not a member's training.
    match.threshold_grid is training's too: validation scores MAP@5 on it (and picks the best
    epoch, stopping early, on the grid the match stage calibrates on)."""
    member = MemberSettings.pick(config["embed"]["members"][wildcards.member])
    shared = {**MemberSettings.pick(config["embed"]), "threshold_grid": config["match"]["threshold_grid"]}
    return params_json({"member": member, "training": shared, "seed": config["seed"]})


def train_inputs(wildcards):
    inputs = {
        "train": "results/data/train.parquet",
        "align": member_align(wildcards),
    }
    if int(wildcards.round) > 0:
        inputs["pseudo_labels"] = f"results/match/round{int(wildcards.round) - 1}/pseudo_labels.parquet"
    return inputs


def pseudo_labels_option(wildcards, input):
    return f"--pseudo-labels {shlex.quote(input.pseudo_labels)}" if "pseudo_labels" in input.keys() else ""


# --- Match (match.smk) -----------------------------------------------------------------------
PSEUDO_ROUNDS = config["match"]["pseudo_labels"]["rounds"]
ROUNDS = list(range(PSEUDO_ROUNDS + 1))
FINAL_ROUND = ROUNDS[-1]
FINAL_ENSEMBLE = f"results/match/round{FINAL_ROUND}/ensemble"
# One member's search (match_member, the baselines, the gallery); the ensemble's fusion, which
# does not search (templates, centres, flip fusion, index): it ranks, calibrates and picks
# pseudo-labels. `pseudo_labels.rounds` only shapes the DAG, and pseudo_label_weight reaches the
# ensemble in its weights.
SEARCH = SearchSettings.pick(config["match"])
ENSEMBLE = EnsembleSettings.pick(config["match"])


def resolved_scope(params):
    """params with match.scope.mirrored_sides auto decided: a mirrored photo is the same animal
    (embed.flip_as_new_identity false), so a mirrored left may match a right (match/scope.py).
    The ensemble and the local member's pairs read the same scope."""
    scope = params.get("scope", {})
    if scope.get("mirrored_sides", "auto") == "auto":
        scope = {**scope, "mirrored_sides": not config["embed"]["flip_as_new_identity"]}
    return {**params, "scope": scope}


ENSEMBLE = resolved_scope(ENSEMBLE)
# match.scope.estimate: viewpoints estimated for the photos without one (match/viewpoint_estimate.py,
# rule estimate_viewpoints), read by the ensemble and the local member's scope; nothing when off.
VIEWPOINT_DIR = "results/match/viewpoints"
VIEWPOINT_INPUTS = (
    [f"{VIEWPOINT_DIR}/viewpoints.parquet", f"{VIEWPOINT_DIR}/summary.json"]
    if config["match"]["scope"]["estimate"]
    else []
)
VIEWPOINT_OPTIONS = (
    f" --viewpoints {VIEWPOINT_INPUTS[0]} --viewpoint-summary {VIEWPOINT_INPUTS[1]}" if VIEWPOINT_INPUTS else ""
)
LOCAL_VIEWPOINT_OPTION = f" --viewpoints {VIEWPOINT_INPUTS[0]}" if VIEWPOINT_INPUTS else ""
DECISION = {**DecisionSettings.pick(config["match"]["decision"]), "seed": config["seed"]}
# The decide rule's embeddings (new individuals grouped, match/new_groups.py): the final round's
# members, every fold, with each table's fold.
_DECIDE_TABLES = (
    [(m, f) for m in MEMBERS for f in CV_FOLDS] if config["match"]["decision"]["new_groups"]["enabled"] else []
)
DECIDE_EMBEDDINGS = [f"results/embed/round{FINAL_ROUND}/{m}/fold{f}/embeddings.parquet" for m, f in _DECIDE_TABLES]
DECIDE_EMBEDDINGS_OPTION = (
    f" --embeddings {quoted(DECIDE_EMBEDDINGS)} --embedding-folds {' '.join(str(f) for _, f in _DECIDE_TABLES)}"
    if _DECIDE_TABLES
    else ""
)


def match_dir(round_, member):
    """A member's (or the local member's) tables of one pseudo-label round."""
    return f"results/match/round{round_}/{member}"


def ensemble_members(round_):
    """The embedding members of rounds 0..round_ as (round, member, weight); pseudo-labelled
    members' weights are multiplied by match.ensemble.pseudo_label_weight (2nd place gave them 2)."""
    boost = config["match"]["ensemble"]["pseudo_label_weight"]
    return [
        (r, m, config["embed"]["members"][m].get("weight", MemberEntry.weight) * (boost if r > 0 else 1.0))
        for r in range(round_ + 1)
        for m in MEMBERS
    ]


def member_dirs(round_):
    return [match_dir(r, m) for r, m, _ in ensemble_members(round_)]


def member_weights(round_):
    return [weight for _, _, weight in ensemble_members(round_)]


def member_embeddings(round_):
    """The members' embeddings, member by member (ensemble_members' order), fold by fold."""
    return [f"{embed_dir(r, m)}/fold{f}/embeddings.parquet" for r, m, _ in ensemble_members(round_) for f in CV_FOLDS]


def member_embeddings_of(wildcards):
    return member_embeddings(int(wildcards.round))


# The tables of a member's folder (match_member's outputs) that the ensemble reads, with summary.json.
MEMBER_TABLES = ("val_topk.parquet", "test_topk.parquet", "val_predictions.parquet", "test_predictions.parquet")


def submission_embeddings(wildcards):
    """With data.group_duplicate_ids, the final round's embeddings order a merged id's original ids
    per photo (flukeline.evaluate.submission); without, no merged ids and nothing to read."""
    if not config["data"]["group_duplicate_ids"]:
        return []
    return expand(f"results/embed/round{FINAL_ROUND}/{{m}}/fold{{f}}/embeddings.parquet", m=MEMBERS, f=CV_FOLDS)


def submission_embeddings_option(wildcards, input):
    return f"--embeddings {quoted(input.embeddings)}" if input.embeddings else ""


# --- Local-feature member (local.smk) --------------------------------------------------------
LOCAL = config["match"]["local"]
LOCAL_METHOD = LOCAL["method"]
# source photo: the detect box on the photo at long_side ("photo<N>"); crop: the aligned crops;
# auto: the crops where the learned detector's landmarks align them, else the photo.
LOCAL_SOURCE = (
    ("crop" if config["detect"]["method"] == "learned" else "photo") if LOCAL["source"] == "auto" else LOCAL["source"]
)
LOCAL_SIZE = (
    f"photo{int(LOCAL['long_side'])}"
    if LOCAL_SOURCE == "photo"
    else size_name(LOCAL["size"] or config["align"]["sizes"][0])
)
LOCAL_FEATURES = f"results/match/local/{LOCAL_METHOD}_{LOCAL_SIZE}"
# The local member's folder name beside the members' (results/match/round<r>/local_<method>).
LOCAL_MEMBER = f"local_{LOCAL_METHOD}"
LOCAL_METHODS = "sift|aliked_lightglue|disk_lightglue"
# The learned matchers load torch and their networks: ~1.2 GB resident (demo, ALIKED + LightGlue).
LOCAL_TORCH = LOCAL_METHOD not in ("none", "sift")
# The extraction consumes only the keypoint settings (method and size are in the path).
LOCAL_FEATURE_SETTINGS = LocalFeatureSettings.pick(LOCAL)
LOCAL_MATCH = resolved_scope(LocalMatchSettings.pick(config["match"]))


def local_members(round_):
    """The local member's folder and configured weight for round_'s ensemble ([] when off)."""
    if LOCAL_METHOD == "none":
        return []
    return [(match_dir(round_, LOCAL_MEMBER), float(LOCAL["weight"]))]


def ensemble_with_local(round_):
    """The ensemble's members as (folder, weight): the embedding members of rounds 0..round_, then
    the local one."""
    return list(zip(member_dirs(round_), member_weights(round_))) + local_members(round_)


def local_match_members(wildcards):
    """The global members' tables that local_match shortlists its pairs from."""
    names = ("val_topk.parquet", "test_topk.parquet", "summary.json")
    return [f"{d}/{name}" for d in member_dirs(int(wildcards.round)) for name in names]


def ensemble_input(wildcards):
    """Every member's tables, the local member's (when on) as one more member folder."""
    return [
        f"{d}/{name}" for d, _ in ensemble_with_local(int(wildcards.round)) for name in (*MEMBER_TABLES, "summary.json")
    ]


# The members and weights options of the ensemble (with the local member) and of local_match.
def ensemble_member_dirs(wildcards):
    return quoted(d for d, _ in ensemble_with_local(int(wildcards.round)))


def ensemble_member_weights(wildcards):
    return " ".join(str(weight) for _, weight in ensemble_with_local(int(wildcards.round)))


def global_member_dirs(wildcards):
    return quoted(member_dirs(int(wildcards.round)))


def global_member_weights(wildcards):
    return " ".join(str(weight) for weight in member_weights(int(wildcards.round)))


def global_member_embeddings(wildcards):
    return quoted(member_embeddings(int(wildcards.round)))


# --- Baselines (baselines.smk) ---------------------------------------------------------------
BASELINES = ["pixel_1nn", "zero_shot_1nn", "zero_shot_box_1nn"]
# The zero-shot baseline sees the crops the members see, at the first configured size.
ZERO_SHOT_SIZE = size_name(config["align"]["sizes"][0])
ZERO_SHOT_SIZE_ARGS = " ".join(map(str, config["align"]["sizes"][0]))  # zero-shot-model --size W H
# 1-NN: every train image is a template, no flips; otherwise the members' search.
BASELINE_SEARCH = {**SEARCH, "templates": "images", "flip_fusion": False}


def baseline_embeddings(wildcards, input):
    """The same table stands for every fold's model: a baseline has nothing to train per fold."""
    return " ".join([shlex.quote(input.embeddings)] * len(CV_FOLDS))


# --- Scores (match.smk: evaluate, metrics_table) ---------------------------------------------
# Scored in metrics.json: every member, the local-feature member when on (local.smk writes its
# folder like a member's), and the ensemble of each round.
SCORED = (
    [(f"{m}@round{r}", match_dir(r, m)) for r in ROUNDS for m in MEMBERS]
    + ([(f"{LOCAL_MEMBER}@round{r}", match_dir(r, LOCAL_MEMBER)) for r in ROUNDS] if LOCAL_METHOD != "none" else [])
    + [(f"ensemble@round{r}", match_dir(r, "ensemble")) for r in ROUNDS]
)
SCORED_SUMMARIES = [f"{d}/summary.json" for _, d in SCORED]
TRUTH_OPTION = f"--test-truth {shlex.quote(TEST_TRUTH)}" if TEST_TRUTH else ""
METHOD_OPTIONS = " ".join(
    f"--method {n} {quoted([f'{d}/val_predictions.parquet', f'{d}/test_predictions.parquet'])}" for n, d in SCORED
)
BASELINE_OPTIONS = " ".join(
    f"--baseline-method {b} results/baseline/{b}/val_predictions.parquet results/baseline/{b}/test_predictions.parquet"
    for b in BASELINES
)
SUMMARY_OPTIONS = " ".join(f"--summary {n} {shlex.quote(f'{d}/summary.json')}" for n, d in SCORED)


def evaluate_input(wildcards):
    inputs = {
        "baseline": "results/baseline/all_new_whale_val_predictions.parquet",
        "methods": [f"{d}/{s}_predictions.parquet" for _, d in SCORED for s in ("val", "test")],
        "baselines": [f"results/baseline/{b}/{s}_predictions.parquet" for b in BASELINES for s in ("val", "test")],
        "submission": "results/submission.csv",
        # Test predictions are scored in the user's ids, expanded as the submission expands them.
        "id_groups": "results/data/id_groups.csv",
        "train": "results/data/train.parquet",
        # Its estimated share of new individuals, beside the true one.
        "ensemble_summary": f"{FINAL_ENSEMBLE}/summary.json",
    }
    if TEST_TRUTH:
        inputs["truth"] = TEST_TRUTH
    return inputs


# --- Gallery (gallery.smk) -------------------------------------------------------------------
def gallery_members():
    """The final round's ensemble members: name, crop size, weight, one model and one embeddings
    table per validation fold (fold fusion, as match_member does for test images)."""
    return [
        {
            "name": f"{m}@round{r}",
            "size": member_size(m),
            "weight": weight,
            "models": [f"{embed_dir(r, m)}/fold{k}/model.safetensors" for k in CV_FOLDS],
            "embeddings": [f"{embed_dir(r, m)}/fold{k}/embeddings.parquet" for k in CV_FOLDS],
        }
        for r, m, weight in ensemble_members(FINAL_ROUND)
    ]


GALLERY_MEMBERS = gallery_members()
GALLERY_INPUTS = [p for m in GALLERY_MEMBERS for p in m["models"] + m["embeddings"]]
DETECTOR_MODEL = ["results/detect/model.safetensors"] if LEARNED_DETECT else []
# The local-feature member, so that identify matches a new photo as local_match matched the test
# photos: its settings, the training photos' features and the final round's calibration.
GALLERY_LOCAL = (
    {
        "method": LOCAL_METHOD,
        "source": LOCAL_SOURCE,
        "size": LOCAL_SIZE,
        "features": LOCAL_FEATURE_SETTINGS,
        "match": LOCAL_MATCH,
        "train_features": f"{LOCAL_FEATURES}/features_train.npz",
        "summary": f"{match_dir(FINAL_ROUND, LOCAL_MEMBER)}/summary.json",
    }
    if LOCAL_METHOD != "none"
    else None
)
GALLERY_LOCAL_INPUTS = [GALLERY_LOCAL["train_features"], GALLERY_LOCAL["summary"]] if GALLERY_LOCAL else []
GALLERY = {
    "train": "results/data/train.parquet",
    "detect": {**CLASSICAL_DETECT, **(BOXES if LEARNED_DETECT else {})},
    "detect_model": DETECTOR_MODEL[0] if LEARNED_DETECT else None,
    "align": ALIGN,
    "match": SEARCH,
    "members": GALLERY_MEMBERS,
    "ensemble_summary": f"{FINAL_ENSEMBLE}/summary.json",
    "local": GALLERY_LOCAL,
}

# --- Review (review.smk) ---------------------------------------------------------------------
# The crops of the first active member's size (the page shows one aligned crop per image).
REVIEW_SIZE = member_size(MEMBERS[0])
# The local-feature member's inlier keypoints of the final round (none when it is off): the page
# draws them between the query's crop and the matched gallery image's.
REVIEW_LOCAL = (
    {"correspondences": f"{match_dir(FINAL_ROUND, LOCAL_MEMBER)}/correspondences.parquet"}
    if LOCAL_METHOD != "none"
    else {}
)
REVIEW_LOCAL_OPTION = "".join(f" --correspondences {shlex.quote(path)}" for path in REVIEW_LOCAL.values())

# --- Export (export.smk) ---------------------------------------------------------------------
# export.report: `snakemake all` also builds the export, and metrics.html shows its section (the
# discovery curve, resighting, the abundance estimate). Off by default: the export refuses photos
# without a date (export.undated), which a run without dates would then stop on.
EXPORT = ExportSettings.pick(config["export"])
EXPORT_REPORT = config["export"]["report"]
EXPORT_DIR = "results/export"
# The data root's train.csv names a training photo's line in the export's messages (a param, not
# an input: the demo's root is a directory output, and train.parquet already orders the rule).
EXPORT_TRAIN_CSV = f"{DATA_ROOT}/train.csv"


def export_input(wildcards):
    """The export's tables, and the catalogue version the run ingested (data.catalogue)."""
    inputs = {
        "train": "results/data/train.parquet",
        "test": "results/data/test.parquet",
        "decisions": "results/decisions.csv",
    }
    return inputs | ({"catalogue": str(CATALOGUE)} if CATALOGUE else {})


EXPORT_CATALOGUE_OPTION = f" --catalogue {shlex.quote(str(CATALOGUE))}" if CATALOGUE else ""
METRICS_SECTIONS = [f"{EXPORT_DIR}/section.html"] if EXPORT_REPORT else []
METRICS_SECTION_OPTION = "".join(f" --section {shlex.quote(path)}" for path in METRICS_SECTIONS)
