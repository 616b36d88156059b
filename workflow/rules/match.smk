# Match stage: each member's candidates and calibrated threshold, the ensemble of a pseudo-label
# round (members of that round and the ones before), the submission and the metrics.


rule match_member:
    input:
        train="results/data/train.parquet",
        embeddings=expand("results/embed/round{{round}}/{{member}}/fold{fold}/embeddings.parquet", fold=CV_FOLDS),
    output:
        val_topk="results/match/round{round}/{member}/val_topk.parquet",
        test_topk="results/match/round{round}/{member}/test_topk.parquet",
        val="results/match/round{round}/{member}/val_predictions.parquet",
        test="results/match/round{round}/{member}/test_predictions.parquet",
        calibration="results/match/round{round}/{member}/calibration.csv",
        curve=report(
            "results/match/round{round}/{member}/calibration.png",
            caption="../report/calibration.rst",
            category="5 match",
            subcategory="threshold calibration",
            labels={"method": "{member}", "round": "{round}"},
        ),
        summary="results/match/round{round}/{member}/summary.json",
    log:
        "results/logs/match_round{round}_{member}.log",
    benchmark:
        "results/benchmarks/match_round{round}_{member}.tsv"
    wildcard_constraints:
        round=r"\d+",
        member="|".join(MEMBERS),
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 0.27 GB, 2-5 s
        runtime=by_attempt(10),
    params:
        match=params_json(SEARCH),
        folds=FOLDS,
        out_dir=lambda w: f"results/match/round{w.round}/{w.member}",
    shell:
        "{FLUKELINE} match --train {input.train:q} --embeddings {input.embeddings:q}"
        " --folds {params.folds} --params {params.match:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule ensemble:
    input:
        # The local member (workflow/rules/local.smk, match.local) when on, as one more member folder.
        ensemble_input,
        # The photos' date, place and side that match.scope reads (match/scope.py).
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        viewpoints=VIEWPOINT_INPUTS,
    output:
        # The candidates and the score the ensemble ranked by (summary.json "score": similarity or votes).
        val_topk="results/match/round{round}/ensemble/val_topk.parquet",
        test_topk="results/match/round{round}/ensemble/test_topk.parquet",
        val="results/match/round{round}/ensemble/val_predictions.parquet",
        test="results/match/round{round}/ensemble/test_predictions.parquet",
        calibration="results/match/round{round}/ensemble/calibration.csv",
        curve=report(
            "results/match/round{round}/ensemble/calibration.png",
            caption="../report/calibration.rst",
            category="5 match",
            subcategory="threshold calibration",
            labels={"method": "ensemble", "round": "{round}"},
        ),
        summary="results/match/round{round}/ensemble/summary.json",
        pseudo_labels="results/match/round{round}/pseudo_labels.parquet",
    log:
        "results/logs/ensemble_round{round}.log",
    benchmark:
        "results/benchmarks/ensemble_round{round}.tsv"
    wildcard_constraints:
        round=r"\d+",
    threads: cpu_threads(1)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 0.2 GB, 2 s
        runtime=by_attempt(10),
    params:
        match=params_json(ENSEMBLE),
        members=ensemble_member_dirs,
        weights=ensemble_member_weights,
        out_dir=lambda w: f"results/match/round{w.round}/ensemble",
        viewpoints=VIEWPOINT_OPTIONS,
    shell:
        "{FLUKELINE} ensemble --members {params.members} --weights {params.weights} --params {params.match:q}"
        " --round {wildcards.round} --out-dir {params.out_dir:q} --pseudo-labels {output.pseudo_labels:q}"
        " --train {input.train:q} --test {input.test:q}{params.viewpoints} > {log:q} 2>&1"


# match.scope.estimate: the viewpoints of the photos without one, from the labelled photos and the
# round-0 members' embeddings (match/viewpoint_estimate.py); used by scope when accurate enough.
rule estimate_viewpoints:
    input:
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        embeddings=member_embeddings(0),
    output:
        table=f"{VIEWPOINT_DIR}/viewpoints.parquet",
        summary=f"{VIEWPOINT_DIR}/summary.json",
    log:
        "results/logs/estimate_viewpoints.log",
    benchmark:
        "results/benchmarks/estimate_viewpoints.tsv"
    threads: cpu_threads(1)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 0.3 GB, 5 s
        runtime=by_attempt(10),
    params:
        scope=params_json(ENSEMBLE["scope"]),
        members=len(MEMBERS),
        embeddings=quoted(member_embeddings(0)),
    shell:
        "{FLUKELINE} estimate-viewpoints --train {input.train:q} --test {input.test:q}"
        " --embeddings {params.embeddings} --members {params.members} --params {params.scope:q}"
        " --out {output.table:q} --summary {output.summary:q} > {log:q} 2>&1"


rule submission:
    input:
        test="results/data/test.parquet",
        train="results/data/train.parquet",
        rejected="results/data/rejected.csv",
        predictions=f"{FINAL_ENSEMBLE}/test_predictions.parquet",
        # Training ids back to the user's ids, the leaks (match.use_leaks), candidates to fill with.
        id_groups="results/data/id_groups.csv",
        duplicates="results/data/duplicates.csv",
        topk=f"{FINAL_ENSEMBLE}/test_topk.parquet",
        embeddings=submission_embeddings,
    output:
        "results/submission.csv",
    log:
        "results/logs/submission.log",
    benchmark:
        "results/benchmarks/submission.tsv"
    resources:
        mem_mb=by_attempt(500),  # 0.13 GB, 1 s
        runtime=by_attempt(5),
    params:
        use_leaks="--use-leaks" if config["match"]["use_leaks"] else "",
        embeddings=submission_embeddings_option,
    shell:
        "{FLUKELINE} submit --test {input.test:q} --predictions {input.predictions:q}"
        " --rejected {input.rejected:q} --train {input.train:q} --id-groups {input.id_groups:q}"
        " --duplicates {input.duplicates:q} {params.use_leaks} --topk {input.topk:q} {params.embeddings}"
        " --out {output:q} > {log:q} 2>&1"


# The only rule that reads the demo's test identities.
rule evaluate:
    input:
        unpack(evaluate_input),
    output:
        "results/metrics.json",
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    resources:
        mem_mb=by_attempt(500),  # 0.14 GB, 1 s
        runtime=by_attempt(5),
    params:
        truth=TRUTH_OPTION,
        methods=METHOD_OPTIONS,
        baselines=BASELINE_OPTIONS,
        submission_method=f"ensemble@round{FINAL_ROUND}",
    shell:
        "{FLUKELINE} evaluate --baseline {input.baseline:q} {params.methods} {params.baselines}"
        " --submission-method {params.submission_method} --submission {input.submission:q} {params.truth}"
        " --id-groups {input.id_groups:q} --train {input.train:q} --ensemble-summary {input.ensemble_summary:q}"
        " --out {output:q} > {log:q} 2>&1"


# The report's metrics table (`snakemake --report`): metrics.json with each method's threshold.
# Run where Snakemake runs, not queued as a cluster job (a second of work).
rule metrics_table:
    input:
        metrics="results/metrics.json",
        summaries=SCORED_SUMMARIES,
        # Later stages' sections (export.report: the export's discovery curve and abundance).
        sections=METRICS_SECTIONS,
    output:
        report("results/metrics.html", caption="../report/metrics_table.rst", category="5 match", subcategory="metrics"),
    log:
        "results/logs/metrics_table.log",
    benchmark:
        "results/benchmarks/metrics_table.tsv"
    localrule: True
    resources:
        mem_mb=by_attempt(500),
        runtime=by_attempt(5),
    params:
        summaries=SUMMARY_OPTIONS,
        sections=METRICS_SECTION_OPTION,
    shell:
        "{FLUKELINE} metrics-table --metrics {input.metrics:q} {params.summaries}{params.sections}"
        " --out {output:q} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 match`, the submission and the metrics (and what they need).
rule match:
    input:
        "results/submission.csv",
        "results/metrics.json",
        "results/metrics.html",
    localrule: True
