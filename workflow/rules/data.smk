# Data stage: the demo dataset (data.source demo) or the converted Omniglot characters (omniglot),
# ingest, and the all-new_whale baseline.

if DEMO:

    rule demo_dataset:
        output:
            root=directory(DATA_ROOT),
            truth=TEST_TRUTH,
        log:
            "results/logs/demo_dataset.log",
        benchmark:
            "results/benchmarks/demo_dataset.tsv"
        threads: cpu_threads(2)
        resources:
            mem_mb=by_attempt(1000),  # demo preset: 0.46 GB, 15-32 s
            runtime=by_attempt(10),
        params:
            preset=config["data"]["demo"]["preset"],
            overrides=params_json(config["data"]["demo"]["overrides"]),
            seed=config["seed"],
        shell:
            "{FLUKELINE} demo --out {output.root:q} --truth {output.truth:q}"
            " --preset {params.preset} --seed {params.seed} --overrides {params.overrides:q}"
            " --workers {threads} > {log:q} 2>&1"

    rule demo_contact_sheet:
        input:
            root=DATA_ROOT,
        output:
            report("results/data/demo_contact_sheet.png", caption="../report/demo_contact_sheet.rst", category="1 data"),
        log:
            "results/logs/demo_contact_sheet.log",
        benchmark:
            "results/benchmarks/demo_contact_sheet.tsv"
        resources:
            mem_mb=by_attempt(500),  # 0.14 GB, 1-2 s
            runtime=by_attempt(5),
        shell:
            "{FLUKELINE} contact-sheet --root {input.root:q} --out {output:q} > {log:q} 2>&1"


if OMNIGLOT:

    rule omniglot_dataset:
        input:
            zip=OMNIGLOT_ZIP,
        output:
            root=directory(DATA_ROOT),
            truth=TEST_TRUTH,
        log:
            "results/logs/omniglot_dataset.log",
        benchmark:
            "results/benchmarks/omniglot_dataset.tsv"
        resources:
            mem_mb=by_attempt(1000),
            runtime=by_attempt(10),
        params:
            settings=params_json(OMNIGLOT_SETTINGS),
            seed=config["seed"],
        shell:
            "{FLUKELINE} omniglot --zip {input.zip:q} --out {output.root:q} --truth {output.truth:q}"
            " --seed {params.seed} --settings {params.settings:q} > {log:q} 2>&1"


rule ingest:
    input:
        unpack(ingest_input),
    output:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        keypoints="results/data/keypoints.parquet",
        boxes="results/data/boxes.parquet",
        rejected="results/data/rejected.csv",
        # Exact and near-duplicate photos across train and test (ingest writes it beside rejected.csv).
        duplicates="results/data/duplicates.csv",
        # Training ids made from duplicate groups -> the user's ids (data.group_*; empty when off).
        id_groups="results/data/id_groups.csv",
        summary="results/data/summary.json",
    log:
        "results/logs/ingest.log",
    benchmark:
        "results/benchmarks/ingest.tsv"
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 0.20 GB, 5-10 s (half of it the perceptual hashes)
        runtime=by_attempt(10),
    params:
        root=DATA_ROOT,
        annotations=params_json(ANNOTATIONS),
        data=params_json(INGEST),
        seed=config["seed"],
        catalogue=f"--catalogue {shlex.quote(str(CATALOGUE))}" if CATALOGUE else "",
        cache=PHOTO_CACHE["ingest"],
    shell:
        "{FLUKELINE} ingest --root {params.root:q} --train {output.train:q} --test {output.test:q}"
        " --rejected {output.rejected:q} --summary {output.summary:q}"
        " --annotations {params.annotations:q} --params {params.data:q} --seed {params.seed}"
        " --duplicates {output.duplicates:q} --id-groups {output.id_groups:q} {params.catalogue}"
        " --cache {params.cache:q} --threads {threads} > {log:q} 2>&1"


# The data summary figure of the report (`snakemake --report`). A second of plotting: run where
# Snakemake runs, not queued as a cluster job.
rule data_summary:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
    output:
        report("results/data/summary.png", caption="../report/data_summary.rst", category="1 data"),
    log:
        "results/logs/data_summary.log",
    benchmark:
        "results/benchmarks/data_summary.tsv"
    localrule: True
    resources:
        mem_mb=by_attempt(500),  # tiny preset: 0.2 GB, 2 s
        runtime=by_attempt(5),
    shell:
        "{FLUKELINE} data-summary --train {input.train:q} --test {input.test:q} --out {output:q} > {log:q} 2>&1"


rule baseline_all_new_whale:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
    output:
        submission="results/baseline/all_new_whale_submission.csv",
        predictions="results/baseline/all_new_whale_val_predictions.parquet",
    log:
        "results/logs/baseline_all_new_whale.log",
    benchmark:
        "results/benchmarks/baseline_all_new_whale.tsv"
    resources:
        mem_mb=by_attempt(500),  # 0.15 GB, 1-2 s
        runtime=by_attempt(5),
    shell:
        "{FLUKELINE} baseline --train {input.train:q} --test {input.test:q}"
        " --submission {output.submission:q} --val-predictions {output.predictions:q} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 data` builds the image tables (and the demo's contact sheet).
rule data:
    input:
        "results/data/train.parquet",
        "results/data/test.parquet",
        "results/baseline/all_new_whale_val_predictions.parquet",
        "results/data/summary.png",
        "results/data/demo_contact_sheet.png" if DEMO else [],
    localrule: True
