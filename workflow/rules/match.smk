# Match stage: each member's candidates and calibrated threshold, the ensemble of a pseudo-label
# round (members of that round and the ones before), the submission and the metrics.

PSEUDO_ROUNDS = config["match"]["pseudo_labels"]["rounds"]
ROUNDS = list(range(PSEUDO_ROUNDS + 1))
FINAL_ROUND = ROUNDS[-1]
MATCH_KEYS = (
    "top_k",
    "candidates",
    "templates",
    "centres",
    "flip_fusion",
    "ann_above",
    "hnsw_m",
    "ef_search",
    "new_whale_threshold",
    "threshold_grid",
)
# The ensemble combines the members' top-k tables: it does not search (templates, centres, flip
# fusion, index), it ranks, calibrates and picks pseudo-labels. `pseudo_labels.rounds` only shapes
# the DAG (which rounds exist), and the weights reach the rule as its `weights` param.
ENSEMBLE_KEYS = ("top_k", "candidates", "new_whale_threshold", "threshold_grid")


def match_params():
    return params_json({k: config["match"][k] for k in MATCH_KEYS if k in config["match"]})


def ensemble_params():
    match = config["match"]
    return params_json(
        {
            **{k: match[k] for k in ENSEMBLE_KEYS if k in match},
            "ensemble": {k: v for k, v in match["ensemble"].items() if k != "pseudo_label_weight"},
            "pseudo_labels": {k: v for k, v in match["pseudo_labels"].items() if k != "rounds"},
        }
    )


def ensemble_members(round_):
    """Members of rounds 0..round_: (match folder, weight); pseudo-labelled members' weights are
    multiplied by match.ensemble.pseudo_label_weight (2nd place gave them 2)."""
    boost = config["match"]["ensemble"]["pseudo_label_weight"]
    return [
        (f"results/match/round{r}/{m}", config["embed"]["members"][m].get("weight", 1.0) * (boost if r > 0 else 1.0))
        for r in range(round_ + 1)
        for m in MEMBERS
    ]


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
        match=match_params(),
        folds=",".join(map(str, CV_FOLDS)),
        out_dir=lambda w: f"results/match/round{w.round}/{w.member}",
    shell:
        "{FLUKELINE} match --train {input.train:q} --embeddings {input.embeddings:q}"
        " --folds {params.folds} --params {params.match:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule ensemble:
    input:
        # The local member (workflow/rules/local.smk, match.local) when on, as one more member folder.
        lambda w: [
            f"{d}/{name}"
            for d, _ in ensemble_with_local(int(w.round))
            for name in (
                "val_topk.parquet",
                "test_topk.parquet",
                "val_predictions.parquet",
                "test_predictions.parquet",
                "summary.json",
            )
        ],
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
        match=ensemble_params(),
        members=lambda w: " ".join(shlex.quote(d) for d, _ in ensemble_with_local(int(w.round))),
        weights=lambda w: " ".join(str(wt) for _, wt in ensemble_with_local(int(w.round))),
        out_dir=lambda w: f"results/match/round{w.round}/ensemble",
    shell:
        "{FLUKELINE} ensemble --members {params.members} --weights {params.weights} --params {params.match:q}"
        " --round {wildcards.round} --out-dir {params.out_dir:q} --pseudo-labels {output.pseudo_labels:q} > {log:q} 2>&1"


def submission_embeddings(wildcards):
    """With data.group_duplicate_ids, the final round's embeddings order a merged id's original ids
    per photo (flukeline.evaluate.submission); without, no merged ids and nothing to read."""
    if not config["data"]["group_duplicate_ids"]:
        return []
    return expand(f"results/embed/round{FINAL_ROUND}/{{m}}/fold{{f}}/embeddings.parquet", m=MEMBERS, f=CV_FOLDS)


rule submission:
    input:
        test="results/data/test.parquet",
        train="results/data/train.parquet",
        rejected="results/data/rejected.csv",
        predictions=f"results/match/round{FINAL_ROUND}/ensemble/test_predictions.parquet",
        # Training ids back to the user's ids, the leaks (match.use_leaks), candidates to fill with.
        id_groups="results/data/id_groups.csv",
        duplicates="results/data/duplicates.csv",
        topk=f"results/match/round{FINAL_ROUND}/ensemble/test_topk.parquet",
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
        embeddings=lambda w, input: (
            "--embeddings " + " ".join(shlex.quote(p) for p in input.embeddings) if input.embeddings else ""
        ),
    shell:
        "{FLUKELINE} submit --test {input.test:q} --predictions {input.predictions:q}"
        " --rejected {input.rejected:q} --train {input.train:q} --id-groups {input.id_groups:q}"
        " --duplicates {input.duplicates:q} {params.use_leaks} --topk {input.topk:q} {params.embeddings}"
        " --out {output:q} > {log:q} 2>&1"


# Scored in metrics.json: every member, the local-feature member when on (workflow/rules/local.smk
# writes its folder like a member's), and the ensemble of each round.
_LOCAL_METHOD = config["match"]["local"]["method"]
SCORED = (
    [(f"{m}@round{r}", f"results/match/round{r}/{m}") for r in ROUNDS for m in MEMBERS]
    + (
        [(f"local_{_LOCAL_METHOD}@round{r}", f"results/match/round{r}/local_{_LOCAL_METHOD}") for r in ROUNDS]
        if _LOCAL_METHOD != "none"
        else []
    )
    + [(f"ensemble@round{r}", f"results/match/round{r}/ensemble") for r in ROUNDS]
)


def evaluate_input(wildcards):
    inputs = {
        "baseline": "results/baseline/all_new_whale_val_predictions.parquet",
        "methods": [f"{d}/{s}_predictions.parquet" for _, d in SCORED for s in ("val", "test")],
        "baselines": [f"results/baseline/{b}/{s}_predictions.parquet" for b in BASELINES for s in ("val", "test")],
        "submission": "results/submission.csv",
        # Test predictions are scored in the user's ids, expanded as the submission expands them.
        "id_groups": "results/data/id_groups.csv",
        "train": "results/data/train.parquet",
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
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    resources:
        mem_mb=by_attempt(500),  # 0.14 GB, 1 s
        runtime=by_attempt(5),
    params:
        truth=f"--test-truth {shlex.quote(TEST_TRUTH)}" if TEST_TRUTH else "",
        methods=" ".join(
            f"--method {n} {shlex.quote(d + '/val_predictions.parquet')} {shlex.quote(d + '/test_predictions.parquet')}"
            for n, d in SCORED
        ),
        baselines=" ".join(
            f"--baseline-method {b} results/baseline/{b}/val_predictions.parquet results/baseline/{b}/test_predictions.parquet"
            for b in BASELINES
        ),
        submission_method=f"ensemble@round{FINAL_ROUND}",
    shell:
        "{FLUKELINE} evaluate --baseline {input.baseline:q} {params.methods} {params.baselines}"
        " --submission-method {params.submission_method} --submission {input.submission:q} {params.truth}"
        " --id-groups {input.id_groups:q} --train {input.train:q} --out {output:q} > {log:q} 2>&1"


# The report's metrics table (`snakemake --report`): metrics.json with each method's threshold.
# Run where Snakemake runs, not queued as a cluster job (a second of work).
rule metrics_table:
    input:
        metrics="results/metrics.json",
        summaries=[f"{d}/summary.json" for _, d in SCORED],
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
        summaries=" ".join(f"--summary {n} {shlex.quote(d + '/summary.json')}" for n, d in SCORED),
    shell:
        "{FLUKELINE} metrics-table --metrics {input.metrics:q} {params.summaries} --out {output:q} > {log:q} 2>&1"


# Stage target: `snakemake --cores 2 match`, the submission and the metrics (and what they need).
rule match:
    input:
        "results/submission.csv",
        "results/metrics.json",
        "results/metrics.html",
    localrule: True
