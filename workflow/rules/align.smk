# Align stage: one transform per image onto the landmark template (box-derived when the landmarks
# are not usable), then aligned and box crops (and warped masks) at every configured size.


rule align_transforms:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        keypoints="results/detect/keypoints.parquet",
        boxes="results/detect/boxes.parquet",
    output:
        table="results/align/align.parquet",
        contact_sheet=report(
            "results/align/contact_sheet.png", caption="../report/align_contact_sheet.rst", category="3 align"
        ),
    log:
        "results/logs/align_transforms.log",
    benchmark:
        "results/benchmarks/align_transforms.tsv"
    threads: cpu_threads(1)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 0.2 GB, 2 s
        runtime=by_attempt(10),
    params:
        align=params_json(ALIGN),
    shell:
        "{FLUKELINE} align-transforms --train {input.train:q} --test {input.test:q}"
        " --keypoints {input.keypoints:q} --boxes {input.boxes:q} --params {params.align:q}"
        " --out {output.table:q} --contact-sheet {output.contact_sheet:q} > {log:q} 2>&1"


rule align_crops:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        transforms="results/align/align.parquet",
        masks="results/detect/masks.parquet",
    output:
        table="results/align/{size}/align.parquet",
        crops=directory("results/align/{size}/crops"),
    log:
        "results/logs/align_{size}.log",
    benchmark:
        "results/benchmarks/align_{size}.tsv"
    wildcard_constraints:
        size=r"\d+x\d+",
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),  # demo preset (128x64): 0.4 GB, 4-6 s
        runtime=by_attempt(10),
    params:
        margin=config["align"]["margin"],
        padding=config["align"]["padding"],
        cache=PHOTO_CACHE["align"],
    shell:
        "{FLUKELINE} align --train {input.train:q} --test {input.test:q} --transforms {input.transforms:q}"
        " --masks {input.masks:q} --size {wildcards.size} --margin {params.margin} --padding {params.padding}"
        " --table {output.table:q} --crops {output.crops:q} --cache {params.cache:q} --threads {threads}"
        " > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 align` (transforms and the crops at every align.sizes).
rule align:
    input:
        "results/align/align.parquet",
        expand("results/align/{size}/align.parquet", size=ALIGN_SIZES),
    localrule: True
