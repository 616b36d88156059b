# Review stage: a static HTML page (no server) showing each test image beside the final
# ensemble's top-5 candidates, for a person to mark match / new / unsure and export as CSV.


rule review:
    input:
        **REVIEW_LOCAL,
        train="results/data/train.parquet",
        test="results/data/test.parquet",
        align=f"results/align/{REVIEW_SIZE}/align.parquet",
        crops=f"results/align/{REVIEW_SIZE}/crops",
        predictions=f"results/match/round{FINAL_ROUND}/ensemble/test_predictions.parquet",
        # The scores the ensemble ranked by (similarities or votes: summary.json "score" says which).
        topk=f"results/match/round{FINAL_ROUND}/ensemble/test_topk.parquet",
        summary=f"results/match/round{FINAL_ROUND}/ensemble/summary.json",
        # Each photo's class (match / new individual / review) and probabilities (decisions.smk).
        decisions="results/decisions.csv",
    output:
        "results/review/index.html",
    log:
        "results/logs/review.log",
    benchmark:
        "results/benchmarks/review.tsv"
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(1000),  # tiny preset: 64 queries, 0.4 MB page, 3 s
        runtime=by_attempt(10),
    params:
        correspondences=REVIEW_LOCAL_OPTION,
    shell:
        "{FLUKELINE} review --train {input.train:q} --test {input.test:q} --align {input.align:q}"
        " --predictions {input.predictions:q} --summary {input.summary:q} --topk {input.topk:q}"
        " --decisions {input.decisions:q}{params.correspondences} --out {output:q} --threads {threads} > {log:q} 2>&1"
