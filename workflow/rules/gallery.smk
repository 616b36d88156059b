# Gallery for `flukeline identify` / `flukeline add`: which models and settings turn a new photo
# into the final ensemble's embeddings, and the run's training images as the known sightings;
# with the local-feature member, its settings, the training photos' features and its calibration.
# Only a manifest (paths into results/): the models and embeddings stay where the run wrote them.


rule gallery:
    input:
        train="results/data/train.parquet",
        summary=f"{FINAL_ENSEMBLE}/summary.json",
        models=GALLERY_INPUTS,
        detector=DETECTOR_MODEL,
        local=GALLERY_LOCAL_INPUTS,
    output:
        "results/gallery/gallery.json",
    log:
        "results/logs/gallery.log",
    benchmark:
        "results/benchmarks/gallery.tsv"
    # Writes one small JSON: not worth a cluster job.
    localrule: True
    resources:
        mem_mb=by_attempt(500),
        runtime=by_attempt(5),
    params:
        settings=params_json(GALLERY),
    shell:
        "{FLUKELINE} gallery --params {params.settings:q} --out-dir results/gallery > {log:q} 2>&1"
