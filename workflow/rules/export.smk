# Export stage: the catalogue and the run's decisions as Darwin Core occurrences, capture
# histories for MARK (.inp) and as a tidy CSV, one row per individual, the discovery curve and a
# first abundance estimate (flukeline.export). `snakemake --cores 2 export` builds it; with
# export.report the default target does too, and metrics.html shows its section.


rule export_sightings:
    input:
        unpack(export_input),
    output:
        occurrence=f"{EXPORT_DIR}/occurrence.csv",
        inp=f"{EXPORT_DIR}/capture_histories.inp",
        histories=f"{EXPORT_DIR}/capture_histories.csv",
        sightings=f"{EXPORT_DIR}/sightings.csv",
        discovery=f"{EXPORT_DIR}/discovery.csv",
        figure=report(f"{EXPORT_DIR}/discovery.png", caption="../report/export_discovery.rst", category="6 export"),
        section=f"{EXPORT_DIR}/section.html",
        summary=f"{EXPORT_DIR}/summary.json",
    log:
        "results/logs/export.log",
    benchmark:
        "results/benchmarks/export.tsv"
    resources:
        mem_mb=by_attempt(1000),  # demo with field records: 1950 photos, 3 s
        runtime=by_attempt(5),
    params:
        settings=params_json(EXPORT),
        train_csv=EXPORT_TRAIN_CSV,
        catalogue=EXPORT_CATALOGUE_OPTION,
        # The folder the command writes its fixed file names into: the outputs' own.
        out=lambda wildcards, output: Path(output.summary).parent,
    shell:
        "{FLUKELINE} export --train {input.train:q} --test {input.test:q} --decisions {input.decisions:q}"
        "{params.catalogue} --train-csv {params.train_csv:q} --params {params.settings:q} --out {params.out:q}"
        " > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 export`.
rule export:
    input:
        f"{EXPORT_DIR}/summary.json",
    localrule: True
