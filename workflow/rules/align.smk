# Align stage: crop each detected box with a margin and resize to every configured size.

ALIGN_SIZES = [size_name(s) for s in config["align"]["sizes"]]


rule align:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        boxes="results/detect/boxes.parquet",
    output:
        table="results/align/{size}/align.parquet",
        crops=directory("results/align/{size}/crops"),
    wildcard_constraints:
        size=r"\d+x\d+",
    params:
        margin=config["align"].get("margin", 0.1),
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "results/logs/align_{size}.log",
    benchmark:
        "results/benchmarks/align_{size}.tsv"
    shell:
        "{FLUKELINE} align --train {input.train:q} --test {input.test:q} --boxes {input.boxes:q}"
        " --size {wildcards.size} --margin {params.margin} --table {output.table:q}"
        " --crops {output.crops:q} --threads {threads} > {log:q} 2>&1"
