# Match stage: nearest identity centre per member, the submission, and the metrics.


rule match_member:
    input:
        train="results/data/train.parquet",
        embeddings=expand("results/embed/{{member}}/fold{fold}/embeddings.parquet", fold=CV_FOLDS),
    output:
        val="results/match/{member}/val_predictions.parquet",
        test="results/match/{member}/test_predictions.parquet",
    params:
        match=params_json(config["match"]),
        folds=",".join(map(str, CV_FOLDS)),
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "results/logs/match_{member}.log",
    benchmark:
        "results/benchmarks/match_{member}.tsv"
    shell:
        "{FLUKELINE} match --train {input.train:q} --embeddings {input.embeddings:q}"
        " --folds {params.folds} --params {params.match:q}"
        " --val-out {output.val:q} --test-out {output.test:q} > {log:q} 2>&1"


rule submission:
    input:
        test="results/data/test.parquet",
        predictions=f"results/match/{MEMBERS[0]}/test_predictions.parquet",
    output:
        "results/submission.csv",
    log:
        "results/logs/submission.log",
    benchmark:
        "results/benchmarks/submission.tsv"
    shell:
        "{FLUKELINE} submit --test {input.test:q} --predictions {input.predictions:q}"
        " --out {output:q} > {log:q} 2>&1"


def evaluate_input(wildcards):
    inputs = {
        "baseline": "results/baseline/all_new_whale_val_predictions.parquet",
        "members": expand("results/match/{member}/val_predictions.parquet", member=MEMBERS),
        "submission": "results/submission.csv",
    }
    if TEST_TRUTH:
        inputs["truth"] = TEST_TRUTH
    return inputs


# The only rule that reads the demo's test identities.
rule evaluate:
    input:
        unpack(evaluate_input),
    output:
        "results/metrics.json",
    params:
        truth=f"--test-truth {shlex.quote(TEST_TRUTH)}" if TEST_TRUTH else "",
        members=",".join(MEMBERS),
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    shell:
        "{FLUKELINE} evaluate --baseline {input.baseline:q} --members {params.members}"
        " --member-predictions {input.members:q} --submission {input.submission:q}"
        " {params.truth} --out {output:q} > {log:q} 2>&1"
