# Shared helpers: config checks the schema cannot express, paths, and per-rule params.


def _config_error(message):
    raise WorkflowError(f"config.yaml: {message}")


for _name, _member in config["embed"]["members"].items():
    if list(_member["size"]) not in [list(s) for s in config["align"]["sizes"]]:
        _config_error(
            f"embed.members.{_name}.size {_member['size']} is not one of align.sizes {config['align']['sizes']}"
        )
for _fold in config["embed"]["cv_folds"]:
    if _fold >= config["data"]["folds"]:
        _config_error(f"embed.cv_folds contains {_fold}, but data.folds is {config['data']['folds']}")


def size_name(size):
    """[128, 64] -> '128x64' (the wildcard used in align/embed paths)."""
    return f"{size[0]}x{size[1]}"


def params_json(*values):
    """Serialise the config values a rule consumes, keys sorted, so that Snakemake's params
    trigger reruns a rule exactly when one of its own settings changes."""
    return json.dumps(values[0] if len(values) == 1 else list(values), sort_keys=True)


SOURCE = config["data"]["source"]
DEMO = SOURCE == "demo"
OMNIGLOT = SOURCE == "omniglot"
# demo and omniglot: the data root is written by a rule (and the test identities beside it).
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
    _omniglot = config["data"]["omniglot"]
    # A relative zip path is relative to the project folder (the Snakefile's), not the working
    # directory, so the default finds ../shared/data/ from any --directory.
    OMNIGLOT_ZIP = str((Path(workflow.basedir) / _omniglot["zip"]).resolve())
    if not Path(OMNIGLOT_ZIP).is_file():
        _config_error(
            f"data.omniglot.zip {_omniglot['zip']!r} is not a file ({OMNIGLOT_ZIP}; a relative path is"
            f" relative to the project folder {workflow.basedir})"
        )
    if _omniglot["train_drawers"][0] > _omniglot["train_drawers"][1]:
        _config_error(f"data.omniglot.train_drawers {_omniglot['train_drawers']} must be [lo, hi] with lo <= hi")
    OMNIGLOT_DIR = f"resources/omniglot/seed{config['seed']}"
    DATA_ROOT = f"{OMNIGLOT_DIR}/kaggle"
    TEST_TRUTH = f"{OMNIGLOT_DIR}/test_truth.csv"
    ANNOTATIONS = {}  # no masks, keypoints or boxes: run with detect.method none or threshold
else:
    DATA_ROOT = config["data"]["root"]
    TEST_TRUTH = None
    ANNOTATIONS = {k: v for k, v in config["data"]["annotations"].items() if v}

if config["detect"]["method"] == "learned" and OMNIGLOT:
    _config_error(
        "detect.method learned trains on annotations, and data.source omniglot has none;"
        " set detect.method: none (the whole image, as workflow/presets/omniglot.yaml does) or threshold"
    )
if config["detect"]["method"] == "learned" and not (ANNOTATIONS.get("masks") or ANNOTATIONS.get("keypoints")):
    _config_error(
        "detect.method learned trains on mask or keypoint annotations, and data.annotations names none;"
        " add them or set detect.method: threshold"
    )

if config["detect"]["method"] == "learned":
    _shared = set(config["align"]["template"]) & set(config["detect"]["keypoints"])
    if len(_shared) < config["align"].get("min_landmarks", 3):
        _config_error(
            f"align.template names {sorted(config['align']['template'])} share only {sorted(_shared)} with"
            f" detect.keypoints {config['detect']['keypoints']}: too few to align on (align.min_landmarks)"
        )

MEMBERS = sorted(config["embed"]["members"])
CV_FOLDS = sorted(config["embed"]["cv_folds"])


def member_size(member):
    return size_name(config["embed"]["members"][member]["size"])
