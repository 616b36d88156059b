# References without training, scored in every run beside the members (results/metrics.json,
# results/metrics.html, the report): raw-pixel 1-NN and zero-shot backbone 1-NN (on the aligned
# crops, and on the whole detect box at the backbone's native input). Each is an
# embeddings table matched by the match stage's own command, so it is scored on exactly the
# members' validation folds and threshold grid; 1-NN: every train image is a template, no flips.


rule baseline_pixel_embeddings:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
    output:
        "results/baseline/pixel_1nn/embeddings.parquet",
    log:
        "results/logs/baseline_pixel_embeddings.log",
    benchmark:
        "results/benchmarks/baseline_pixel_embeddings.tsv"
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),
        runtime=by_attempt(10),
    params:
        size=config["baselines"]["pixel_size"],
        cache=PHOTO_CACHE["pixel"],
    shell:
        "{FLUKELINE} pixel-embeddings --train {input.train:q} --test {input.test:q} --size {params.size}"
        " --cache {params.cache:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule baseline_zero_shot_model:
    output:
        "results/baseline/zero_shot_1nn/model.safetensors",
    log:
        "results/logs/baseline_zero_shot_model.log",
    benchmark:
        "results/benchmarks/baseline_zero_shot_model.tsv"
    resources:
        mem_mb=by_attempt(1000),
        runtime=by_attempt(10),
    params:
        backbone=config["baselines"]["zero_shot"]["backbone"],
        pretrained=config["baselines"]["zero_shot"]["pretrained"],
        size=ZERO_SHOT_SIZE_ARGS,
    shell:
        "{FLUKELINE} zero-shot-model --backbone {params.backbone:q} --pretrained {params.pretrained:q}"
        " --size {params.size} --out {output:q} > {log:q} 2>&1"


rule baseline_zero_shot_embeddings:
    input:
        model="results/baseline/zero_shot_1nn/model.safetensors",
        align=f"results/align/{ZERO_SHOT_SIZE}/align.parquet",
    output:
        "results/baseline/zero_shot_1nn/embeddings.parquet",
    log:
        "results/logs/baseline_zero_shot_embeddings.log",
    benchmark:
        "results/benchmarks/baseline_zero_shot_embeddings.tsv"
    threads: cpu_threads(4)
    resources:
        mem_mb=by_attempt(2000),
        runtime=by_attempt(15),
    params:
        cache=PHOTO_CACHE["embed"],
    shell:
        "{FLUKELINE} embed --model {input.model:q} --align {input.align:q} --out {output:q} --cache {params.cache:q}"
        " --threads {threads} > {log:q} 2>&1"


rule baseline_zero_shot_box_embeddings:
    input:
        model="results/baseline/zero_shot_1nn/model.safetensors",
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        boxes="results/detect/boxes.parquet",
    output:
        "results/baseline/zero_shot_box_1nn/embeddings.parquet",
    log:
        "results/logs/baseline_zero_shot_box_embeddings.log",
    benchmark:
        "results/benchmarks/baseline_zero_shot_box_embeddings.tsv"
    threads: cpu_threads(4)
    resources:
        mem_mb=by_attempt(2000),
        runtime=by_attempt(30),
    params:
        size=" ".join(map(str, config["baselines"]["zero_shot"]["box_size"])),
        cache=PHOTO_CACHE["zero_shot_box"],
    shell:
        "{FLUKELINE} box-embeddings --model {input.model:q} --train {input.train:q} --test {input.test:q}"
        " --boxes {input.boxes:q} --size {params.size} --cache {params.cache:q} --out {output:q}"
        " --threads {threads} > {log:q} 2>&1"


rule match_baseline:
    input:
        train="results/data/train.parquet",
        embeddings="results/baseline/{baseline}/embeddings.parquet",
    output:
        val_topk="results/baseline/{baseline}/val_topk.parquet",
        test_topk="results/baseline/{baseline}/test_topk.parquet",
        val="results/baseline/{baseline}/val_predictions.parquet",
        test="results/baseline/{baseline}/test_predictions.parquet",
        calibration="results/baseline/{baseline}/calibration.csv",
        curve="results/baseline/{baseline}/calibration.png",
        summary="results/baseline/{baseline}/summary.json",
    log:
        "results/logs/match_baseline_{baseline}.log",
    benchmark:
        "results/benchmarks/match_baseline_{baseline}.tsv"
    wildcard_constraints:
        baseline="|".join(BASELINES),
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),
        runtime=by_attempt(10),
    params:
        match=params_json(BASELINE_SEARCH),
        folds=FOLDS,
        embeddings=baseline_embeddings,
        out_dir=lambda w: f"results/baseline/{w.baseline}",
    shell:
        "{FLUKELINE} match --train {input.train:q} --embeddings {params.embeddings}"
        " --folds {params.folds} --params {params.match:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
