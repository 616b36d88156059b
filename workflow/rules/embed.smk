# Embed stage: one model per ensemble member and validation fold, then embeddings of every image.

TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "embedding_dim", "arcface")


def train_params(wildcards):
    member = config["embed"]["members"][wildcards.member]
    training = {k: config["embed"][k] for k in TRAIN_KEYS if k in config["embed"]}
    return params_json({"member": member, "training": training, "seed": config["seed"]})


rule train_member:
    input:
        train="results/data/train.parquet",
        align=lambda w: f"results/align/{member_size(w.member)}/align.parquet",
    output:
        model="results/embed/{member}/fold{fold}/model.safetensors",
        history="results/embed/{member}/fold{fold}/history.csv",
        curves="results/embed/{member}/fold{fold}/curves.png",
    wildcard_constraints:
        fold=r"\d+",
    params:
        train=train_params,
    threads: 4
    resources:
        mem_mb=6000,
        runtime=120,
    log:
        "results/logs/train_{member}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train_{member}_fold{fold}.tsv"
    shell:
        "{FLUKELINE} train --train {input.train:q} --align {input.align:q} --fold {wildcards.fold}"
        " --params {params.train:q} --model {output.model:q} --history {output.history:q}"
        " --curves {output.curves:q} --threads {threads} > {log:q} 2>&1"


rule embed_member:
    input:
        model="results/embed/{member}/fold{fold}/model.safetensors",
        align=lambda w: f"results/align/{member_size(w.member)}/align.parquet",
    output:
        embeddings="results/embed/{member}/fold{fold}/embeddings.parquet",
    wildcard_constraints:
        fold=r"\d+",
    threads: 4
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "results/logs/embed_{member}_fold{fold}.log",
    benchmark:
        "results/benchmarks/embed_{member}_fold{fold}.tsv"
    shell:
        "{FLUKELINE} embed --model {input.model:q} --align {input.align:q}"
        " --out {output.embeddings:q} --threads {threads} > {log:q} 2>&1"
