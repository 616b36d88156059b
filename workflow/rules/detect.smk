# Detect stage: fluke masks, keypoints and boxes for every image.
# detect.method learned: a U-Net (mask + keypoint heatmaps) trained on the annotated images
# (masks, keypoints and/or boxes: with boxes alone it learns box regions, see detect/train.py);
# threshold / none: the classical detector (no masks, no keypoints; align uses the boxes).

if LEARNED_DETECT:

    rule detect_train:
        input:
            train="results/data/train.parquet",
            keypoints="results/data/keypoints.parquet",
            boxes="results/data/boxes.parquet",
        output:
            model="results/detect/model.safetensors",
            history="results/detect/history.csv",
        log:
            "results/logs/detect_train.log",
        benchmark:
            "results/benchmarks/detect_train.tsv"
        threads: cpu_threads(4)
        resources:
            mem_mb=by_attempt(3000),  # demo preset: 1.3 GB, 137-186 s on 2 CPU cores
            runtime=by_attempt(30),
        params:
            model=params_json(DETECTOR_TRAINING),
            seed=config["seed"],
            store=f"{MODEL_STORE}/detect",
        shell:
            "{FLUKELINE} detect-train --train {input.train:q} --keypoints {input.keypoints:q}"
            " --boxes {input.boxes:q} --params {params.model:q} --seed {params.seed} --model {output.model:q}"
            " --history {output.history:q} --model-store {params.store:q} --threads {threads} > {log:q} 2>&1"

    rule detect_predict:
        input:
            model="results/detect/model.safetensors",
            train="results/data/train.parquet",
            test="results/data/test.parquet",
        output:
            **DETECT_OUTPUTS,
            masks_dir=directory("results/detect/masks"),
        log:
            "results/logs/detect_predict.log",
        benchmark:
            "results/benchmarks/detect_predict.tsv"
        threads: cpu_threads(4)
        resources:
            mem_mb=by_attempt(2000),  # 1.1 GB, 25-28 s (87 images/s)
            runtime=by_attempt(15),
        params:
            boxes=params_json(BOXES),
            cache=PHOTO_CACHE["detect"],
        shell:
            "{FLUKELINE} detect-predict --model {input.model:q} --train {input.train:q} --test {input.test:q}"
            " --params {params.boxes:q} --masks-dir {output.masks_dir:q} --masks {output.masks:q}"
            " --keypoints {output.keypoints:q} --boxes {output.boxes:q} --cache {params.cache:q}"
            " --threads {threads} > {log:q} 2>&1"

    rule detect_evaluate:
        input:
            **DETECT_OUTPUTS,
            model="results/detect/model.safetensors",
            train="results/data/train.parquet",
            gt_keypoints="results/data/keypoints.parquet",
            gt_boxes="results/data/boxes.parquet",
        output:
            metrics="results/detect/metrics.json",
            overlays=report("results/detect/overlays.png", caption="../report/detect_overlays.rst", category="2 detect"),
        log:
            "results/logs/detect_evaluate.log",
        benchmark:
            "results/benchmarks/detect_evaluate.tsv"
        threads: cpu_threads(2)
        resources:
            mem_mb=by_attempt(2000),  # 1.0 GB, 9 s
            runtime=by_attempt(10),
        shell:
            "{FLUKELINE} detect-evaluate --model {input.model:q} --train {input.train:q}"
            " --gt-keypoints {input.gt_keypoints:q} --gt-boxes {input.gt_boxes:q} --masks {input.masks:q}"
            " --keypoints {input.keypoints:q} --boxes {input.boxes:q} --metrics {output.metrics:q}"
            " --overlays {output.overlays:q} --threads {threads} > {log:q} 2>&1"

    # Stage target: `snakemake --cores 2 detect` (with threshold / none the rule below is `detect`).
    rule detect:
        input:
            "results/detect/metrics.json",
            *DETECT_OUTPUTS.values(),
        localrule: True

else:

    # Also the stage target: `snakemake --cores 2 detect`.
    rule detect:
        input:
            train="results/data/train.parquet",
            test="results/data/test.parquet",
        output:
            **DETECT_OUTPUTS,
        log:
            "results/logs/detect.log",
        benchmark:
            "results/benchmarks/detect.tsv"
        threads: cpu_threads(2)
        resources:
            mem_mb=by_attempt(1000),  # 0.4 GB, 6 s
            runtime=by_attempt(10),
        params:
            detect=params_json(CLASSICAL_DETECT),
            cache=PHOTO_CACHE["detect"],
        shell:
            "{FLUKELINE} detect --train {input.train:q} --test {input.test:q} --out {output.boxes:q}"
            " --keypoints-out {output.keypoints:q} --masks-out {output.masks:q}"
            " --params {params.detect:q} --cache {params.cache:q} --threads {threads} > {log:q} 2>&1"
