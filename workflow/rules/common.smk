# Shared helpers: config checks the schema cannot express, paths, and per-rule params.


def _config_error(message):
    raise WorkflowError(f"config.yaml: {message}")


# Presets merge over config.yaml (dicts merge, lists replace): `members` is a catalogue that
# presets extend, and the `active_members` list says which of them train.
for _name in config["embed"]["active_members"]:
    if _name not in config["embed"]["members"]:
        _config_error(f"embed.active_members names {_name!r}, which embed.members does not define ({sorted(config['embed']['members'])})")
    if _name == "ensemble":
        _config_error("embed.active_members: 'ensemble' is reserved for the match stage's combined result")
ACTIVE = {name: config["embed"]["members"][name] for name in config["embed"]["active_members"]}
for _name, _member in ACTIVE.items():
    if list(_member["size"]) not in [list(s) for s in config["align"]["sizes"]]:
        _config_error(
            f"embed.members.{_name}.size {_member['size']} is not one of align.sizes {config['align']['sizes']}"
        )
for _name, _member in ACTIVE.items():
    _pretrained = _member.get("pretrained", config["embed"].get("pretrained", "none"))
    if _pretrained == "imagenet":
        from flukeline.core.pretrained import IMAGENET_SOURCES, timm_name

        if timm_name(_member["backbone"]) not in IMAGENET_SOURCES:
            _config_error(
                f"embed.members.{_name}: pretrained imagenet is available offline for {sorted(IMAGENET_SOURCES)},"
                f" not {_member['backbone']}; use one of them, pretrained: hub (internet), a local weights file, or none"
            )
    elif _pretrained not in ("none", "hub") and not Path(_pretrained).is_file():
        _config_error(f"embed.members.{_name}: pretrained weights file {_pretrained} does not exist")
_detect_weights = config["detect"]["model"].get("encoder_weights")
if config["detect"]["method"] == "learned" and _detect_weights == "imagenet":
    from flukeline.core.pretrained import IMAGENET_SOURCES, timm_name

    _encoder = config["detect"]["model"]["encoder"]
    if not _encoder.startswith("tu-") or timm_name(_encoder) not in IMAGENET_SOURCES:
        _config_error(
            f"detect.model.encoder_weights: imagenet is available offline for tu-{', tu-'.join(sorted(IMAGENET_SOURCES))},"
            f" not {_encoder}; use one of them, hub (internet), a local weights file, or null"
        )
elif config["detect"]["method"] == "learned" and _detect_weights not in (None, "hub") and not Path(_detect_weights).is_file():
    _config_error(f"detect.model.encoder_weights: weights file {_detect_weights} does not exist")
for _fold in config["embed"]["cv_folds"]:
    if _fold >= config["data"]["folds"]:
        _config_error(f"embed.cv_folds contains {_fold}, but data.folds is {config['data']['folds']}")


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

MEMBERS = sorted(ACTIVE)
CV_FOLDS = sorted(config["embed"]["cv_folds"])


def member_size(member):
    return size_name(config["embed"]["members"][member]["size"])
