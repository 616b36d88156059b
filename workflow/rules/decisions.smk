# Decisions: every test photo becomes match (auto-accepted id), new (a new individual) or review,
# with P(top identity is right) and P(new individual) calibrated on the validation folds
# (flukeline.match.decisions), and, where the run knows the test identities, those decisions
# scored against them (the evaluate stage's decision-scores; the decide rule never reads them).


rule decide:
    input:
        val_topk=f"{FINAL_ENSEMBLE}/val_topk.parquet",
        test_topk=f"{FINAL_ENSEMBLE}/test_topk.parquet",
        ensemble_summary=f"{FINAL_ENSEMBLE}/summary.json",
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        # The final round's members' embeddings: the new individuals grouped (match.decision.new_groups).
        embeddings=DECIDE_EMBEDDINGS,
    output:
        decisions="results/decisions.csv",
        summary="results/decisions/summary.json",
        calibration="results/decisions/calibration.json",
        figure=report(
            "results/decisions/reliability.png",
            caption="../report/decisions_reliability.rst",
            category="5 match",
            subcategory="decisions",
        ),
    log:
        "results/logs/decide.log",
    benchmark:
        "results/benchmarks/decide.tsv"
    threads: cpu_threads(1)
    resources:
        mem_mb=by_attempt(1000),  # demo preset: 450 test photos, 3 s
        runtime=by_attempt(5),
    params:
        decision=params_json(DECISION),
        embeddings=DECIDE_EMBEDDINGS_OPTION,
    shell:
        "{FLUKELINE} decide --val-topk {input.val_topk:q} --test-topk {input.test_topk:q}"
        " --ensemble-summary {input.ensemble_summary:q} --train {input.train:q} --test {input.test:q}"
        " --params {params.decision:q} --out {output.decisions:q} --summary {output.summary:q}"
        " --calibration {output.calibration:q} --figure {output.figure:q}{params.embeddings} > {log:q} 2>&1"


if TEST_TRUTH:

    # Like the evaluate rule, a reader of the test identities: not in the default target (see
    # tests/workflow/test_truth_isolation.py); `snakemake --cores 2 decisions` builds it.
    rule decision_scores:
        input:
            decisions="results/decisions.csv",
            summary="results/decisions/summary.json",
            truth=TEST_TRUTH,
        output:
            "results/decisions/test_scores.json",
        log:
            "results/logs/decision_scores.log",
        benchmark:
            "results/benchmarks/decision_scores.tsv"
        localrule: True
        resources:
            mem_mb=by_attempt(500),
            runtime=by_attempt(5),
        shell:
            "{FLUKELINE} decision-scores --decisions {input.decisions:q} --summary {input.summary:q}"
            " --truth {input.truth:q} --out {output:q} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 decisions`, the decisions (and their test scores where the truth is known).
rule decisions:
    input:
        "results/decisions.csv",
        "results/decisions/test_scores.json" if TEST_TRUTH else [],
    localrule: True
