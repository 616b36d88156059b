# Detect stage: one box per image (the skeleton's threshold detector).


rule detect:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
    output:
        boxes="results/detect/boxes.parquet",
    params:
        detect=params_json(config["detect"]),
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "results/logs/detect.log",
    benchmark:
        "results/benchmarks/detect.tsv"
    shell:
        "{FLUKELINE} detect --train {input.train:q} --test {input.test:q} --out {output.boxes:q}"
        " --params {params.detect:q} --threads {threads} > {log:q} 2>&1"
