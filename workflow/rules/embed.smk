# Embed stage: one model per ensemble member, pseudo-label round and validation fold (each its own
# job: members train in parallel locally or as separate cluster jobs), then embeddings of every
# crop and its mirror image.


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
        pseudo=pseudo_labels_option,
        store=f"{MODEL_STORE}/embed/round{{round}}/{{member}}/fold{{fold}}",
        cache=PHOTO_CACHE["frozen_trunk"],
    shell:
        "{FLUKELINE} train --train {input.train:q} --align {input.align:q} --fold {wildcards.fold}"
        " --params {params.train:q} {params.pseudo} --model {output.model:q} --history {output.history:q}"
        " --curves {output.curves:q} --model-store {params.store:q} --cache {params.cache:q}"
        " --threads {threads} > {log:q} 2>&1"


rule embed_member:
    input:
        model="results/embed/round{round}/{member}/fold{fold}/model.safetensors",
        align=member_align,
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
    params:
        cache=PHOTO_CACHE["embed"],
    shell:
        "{FLUKELINE} embed --model {input.model:q} --align {input.align:q}"
        " --out {output.embeddings:q} --cache {params.cache:q} --threads {threads} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 embed`, every member's embeddings of every round and fold
# (rounds after the first need the previous round's match: match.pseudo_labels.rounds).
rule embed:
    input:
        expand(
            "results/embed/round{round}/{member}/fold{fold}/embeddings.parquet",
            round=ROUNDS,
            member=MEMBERS,
            fold=CV_FOLDS,
        ),
    localrule: True
