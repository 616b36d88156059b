# The local-feature ensemble member (match.local, off with method: none): local features of each
# photo's detect box at match.local.long_side (source: photo; per photo cached by content in
# results/cache/local_features) or of the aligned crops (source: crop; per crop cached by content
# in results/cache/local_crop_features), one table per split, so that editing the matching or its
# calibration never re-extracts; then per pseudo-label round the pairs to verify (the LNBNN
# shortlist over every catalogue descriptor, and the global ensemble's) matched, calibrated and
# written like a member's folder, which the ensemble rule fuses with its fitted weight (votes and
# pair scores of earlier runs reused where exactly the same: results/cache/local_match).


rule photo_features:
    input:
        photos="results/data/{split}.parquet",
        boxes="results/detect/boxes.parquet",
    output:
        "results/match/local/{method}_photo{long_side}/features_{split}.npz",
    log:
        "results/logs/photo_features_{method}_{long_side}_{split}.log",
    benchmark:
        "results/benchmarks/photo_features_{method}_{long_side}_{split}.tsv"
    wildcard_constraints:
        method=LOCAL_METHODS,
        long_side=r"\d+",
        split="train|test",
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(2500 if LOCAL_TORCH else 1500),
        runtime=by_attempt(60),
    params:
        local=params_json(LOCAL_FEATURE_SETTINGS),
        cache=PHOTO_CACHE["local_features"],
    shell:
        "{FLUKELINE} photo-features --photos {input.photos:q} --boxes {input.boxes:q} --split {wildcards.split}"
        " --method {wildcards.method} --params {params.local:q} --cache {params.cache:q} --out {output:q}"
        " --threads {threads} > {log:q} 2>&1"


rule local_features:
    input:
        align="results/align/{size}/align.parquet",
    output:
        "results/match/local/{method}_{size}/features_{split}.npz",
    log:
        "results/logs/local_features_{method}_{size}_{split}.log",
    benchmark:
        "results/benchmarks/local_features_{method}_{size}_{split}.tsv"
    wildcard_constraints:
        method=LOCAL_METHODS,
        size=r"\d+x\d+",
        split="train|test",
    threads: cpu_threads(2)
    resources:
        mem_mb=by_attempt(2500 if LOCAL_TORCH else 1000),  # demo 256x128 SIFT: 1,500 train crops in 9 s, 0.2 GB
        runtime=by_attempt(30),
    params:
        local=params_json(LOCAL_FEATURE_SETTINGS),
        cache=PHOTO_CACHE["local_crop_features"],
    shell:
        "{FLUKELINE} local-features --align {input.align:q} --split {wildcards.split} --method {wildcards.method}"
        " --size {wildcards.size} --params {params.local:q} --cache {params.cache:q} --out {output:q}"
        " --threads {threads} > {log:q} 2>&1"


rule local_match:
    input:
        train="results/data/train.parquet",
        # The photos' date, place and side: match.scope applies to the pairs too (match/local_shortlist.py).
        test="results/data/test.parquet",
        viewpoints=VIEWPOINT_INPUTS,
        features_train=f"{LOCAL_FEATURES}/features_train.npz",
        features_test=f"{LOCAL_FEATURES}/features_test.npz",
        members=local_match_members,
        embeddings=member_embeddings_of,
    output:
        pairs="results/match/round{round}/local_{method}/pairs.parquet",
        # Per test query and identity the best pair's inlier points (the review page draws them).
        correspondences="results/match/round{round}/local_{method}/correspondences.parquet",
        val_topk="results/match/round{round}/local_{method}/val_topk.parquet",
        test_topk="results/match/round{round}/local_{method}/test_topk.parquet",
        val="results/match/round{round}/local_{method}/val_predictions.parquet",
        test="results/match/round{round}/local_{method}/test_predictions.parquet",
        calibration="results/match/round{round}/local_{method}/calibration.csv",
        curve="results/match/round{round}/local_{method}/calibration.png",
        pair_curve=report(
            "results/match/round{round}/local_{method}/local_calibration.png",
            caption="../report/local_calibration.rst",
            category="5 match",
            subcategory="local-feature calibration",
            labels={"method": "{method}", "round": "{round}"},
        ),
        summary="results/match/round{round}/local_{method}/summary.json",
    log:
        "results/logs/local_match_round{round}_{method}.log",
    benchmark:
        "results/benchmarks/local_match_round{round}_{method}.tsv"
    wildcard_constraints:
        round=r"\d+",
        method=LOCAL_METHODS,
    threads: cpu_threads(2)
    resources:
        # Omniglot seed 0: 10,450 pairs in ~4 s on 2 threads; demo 19,850 pairs in 13 s, 0.42 GB.
        # Photos at 512 px with 1,000 keypoints: ~30 ms per pair, i.e. ~25 min per 100k pairs.
        mem_mb=by_attempt(3000 if LOCAL_TORCH else 2000),
        # LightGlue on 2 CPU cores (ALIKED): Omniglot 4,180 pairs at 0.06 s per pair, the demo's
        # 7,940 at 0.093 s (754 s).
        runtime=by_attempt(240 if LOCAL_TORCH else 120),
    params:
        match=params_json(LOCAL_MATCH),
        members=global_member_dirs,
        weights=global_member_weights,
        embeddings=global_member_embeddings,
        folds=FOLDS,
        out_dir=lambda w: f"results/match/round{w.round}/local_{w.method}",
        viewpoints=LOCAL_VIEWPOINT_OPTION,
        # Votes and pair scores of earlier runs, reused where exactly the same (match/local_reuse.py).
        cache=PHOTO_CACHE["local_match"],
    shell:
        "{FLUKELINE} local-match --train {input.train:q} --test {input.test:q} --features-train {input.features_train:q}"
        " --features-test {input.features_test:q} --members {params.members} --weights {params.weights}"
        " --embeddings {params.embeddings} --folds {params.folds} --params {params.match:q}"
        " --out-dir {params.out_dir:q} --cache {params.cache:q} --threads {threads}{params.viewpoints} > {log:q} 2>&1"
