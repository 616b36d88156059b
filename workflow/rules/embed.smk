# Embed stage: one model per ensemble member, pseudo-label round and validation fold (each its own
# job: members train in parallel locally or as separate cluster jobs), then embeddings of every
# crop and its mirror image.


def train_params(wildcards):
    """This member's settings over the shared embed settings: another member's edit leaves it alone.
    Its ensemble `weight` is the match stage's (ensemble rule), not training's; which members and
    folds exist (members, active_members, cv_folds) shapes the DAG, not a member's training.
    match.threshold_grid is training's too: validation scores MAP@5 on it."""
    shared = {k: v for k, v in config["embed"].items() if k not in ("members", "active_members", "cv_folds")}
    # Validation picks the best epoch (and stops early) on the grid the match stage calibrates on.
    shared["threshold_grid"] = config["match"]["threshold_grid"]
    member = {k: v for k, v in config["embed"]["members"][wildcards.member].items() if k != "weight"}
    return params_json({"member": member, "training": shared, "seed": config["seed"]})


def train_inputs(wildcards):
    inputs = {
        "train": "results/data/train.parquet",
        "align": f"results/align/{member_size(wildcards.member)}/align.parquet",
    }
    if int(wildcards.round) > 0:
        inputs["pseudo_labels"] = f"results/match/round{int(wildcards.round) - 1}/pseudo_labels.parquet"
    return inputs


rule train_member:
    input:
        unpack(train_inputs),
    output:
        model="results/embed/round{round}/{member}/fold{fold}/model.safetensors",
        history="results/embed/round{round}/{member}/fold{fold}/history.csv",
        curves=report(
            "results/embed/round{round}/{member}/fold{fold}/curves.png",
            caption="../report/training_curves.rst",
            category="4 embed",
            subcategory="training curves",
            labels={"member": "{member}", "round": "{round}", "fold": "{fold}"},
        ),
    log:
        "results/logs/train_round{round}_{member}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train_round{round}_{member}_fold{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
        round=r"\d+",
    threads: cpu_threads(4)
    resources:
        mem_mb=by_attempt(4000),  # demo preset (mnv2 / lite0, 6 epochs, both at once on 2 CPU cores): 1.8 GB, 370-520 s
        runtime=by_attempt(60),
    params:
        train=train_params,
        pseudo=lambda w, input: (
            f"--pseudo-labels {shlex.quote(input.pseudo_labels)}" if "pseudo_labels" in input.keys() else ""
        ),
    shell:
        "{FLUKELINE} train --train {input.train:q} --align {input.align:q} --fold {wildcards.fold}"
        " --params {params.train:q} {params.pseudo} --model {output.model:q} --history {output.history:q}"
        " --curves {output.curves:q} --threads {threads} > {log:q} 2>&1"


rule embed_member:
    input:
        model="results/embed/round{round}/{member}/fold{fold}/model.safetensors",
        align=lambda w: f"results/align/{member_size(w.member)}/align.parquet",
    output:
        embeddings="results/embed/round{round}/{member}/fold{fold}/embeddings.parquet",
    log:
        "results/logs/embed_round{round}_{member}_fold{fold}.log",
    benchmark:
        "results/benchmarks/embed_round{round}_{member}_fold{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
        round=r"\d+",
    threads: cpu_threads(4)
    resources:
        mem_mb=by_attempt(2000),  # demo preset: 1.2 GB, 60-130 s
        runtime=by_attempt(15),
    shell:
        "{FLUKELINE} embed --model {input.model:q} --align {input.align:q}"
        " --out {output.embeddings:q} --threads {threads} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 embed`, every member's embeddings of every round and fold
# (rounds after the first need the previous round's match: match.pseudo_labels.rounds).
rule embed:
    input:
        expand(
            "results/embed/round{round}/{member}/fold{fold}/embeddings.parquet",
            round=range(config["match"]["pseudo_labels"]["rounds"] + 1),
            member=MEMBERS,
            fold=CV_FOLDS,
        ),
    localrule: True
