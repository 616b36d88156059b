# The local-feature ensemble member (match.local, off with method: none): local features of the
# aligned crops at match.local.size, extracted once per split and cached, so that editing the
# matching or its calibration never re-extracts; then per pseudo-label round the global ensemble's
# shortlisted pairs matched, calibrated and written like a member's folder, which the ensemble
# rule fuses with its fitted weight.

LOCAL = config["match"]["local"]
LOCAL_METHOD = LOCAL["method"]
LOCAL_SIZE = size_name(LOCAL["size"] or config["align"]["sizes"][0])
LOCAL_FEATURES = f"results/match/local/{LOCAL_METHOD}_{LOCAL_SIZE}"
# What each step consumes: the extraction only the keypoint settings (method and size are in the path).
LOCAL_FEATURE_KEYS = ("features", "sift_contrast")
LOCAL_MATCH_KEYS = ("shortlist", "ratio", "ransac_threshold")
# The learned matchers load torch and their networks: ~1.2 GB resident (demo, ALIKED + LightGlue).
LOCAL_TORCH = LOCAL_METHOD not in ("none", "sift")


def local_members(round_):
    """The local member's folder and configured weight for round_'s ensemble ([] when off)."""
    if LOCAL_METHOD == "none":
        return []
    return [(f"results/match/round{round_}/local_{LOCAL_METHOD}", float(LOCAL["weight"]))]


def ensemble_with_local(round_):
    """The ensemble rule's members: the embedding members of rounds 0..round_, then the local one."""
    return ensemble_members(round_) + local_members(round_)


def member_embeddings(round_):
    """The global members' embeddings, member by member (ensemble_members' order), fold by fold."""
    return [
        f"{d.replace('results/match/', 'results/embed/', 1)}/fold{f}/embeddings.parquet"
        for d, _ in ensemble_members(round_)
        for f in CV_FOLDS
    ]


def local_params():
    match = config["match"]
    return params_json(
        {
            **{k: match[k] for k in (*ENSEMBLE_KEYS, "flip_fusion") if k in match},
            "ensemble": {k: v for k, v in match["ensemble"].items() if k != "pseudo_label_weight"},
            "local": {k: LOCAL[k] for k in LOCAL_MATCH_KEYS},
        }
    )


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
        method="sift|aliked_lightglue|disk_lightglue",
        size=r"\d+x\d+",
        split="train|test",
    threads: 2
    resources:
        mem_mb=by_attempt(2500 if LOCAL_TORCH else 1000),  # demo 256x128 SIFT: 1,500 train crops in 9 s, 0.2 GB
        runtime=by_attempt(30),
    params:
        local=params_json({k: LOCAL[k] for k in LOCAL_FEATURE_KEYS}),
    shell:
        "{FLUKELINE} local-features --align {input.align:q} --split {wildcards.split} --method {wildcards.method}"
        " --size {wildcards.size} --params {params.local:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule local_match:
    input:
        train="results/data/train.parquet",
        features_train=f"{LOCAL_FEATURES}/features_train.npz",
        features_test=f"{LOCAL_FEATURES}/features_test.npz",
        members=lambda w: [
            f"{d}/{name}"
            for d, _ in ensemble_members(int(w.round))
            for name in ("val_topk.parquet", "test_topk.parquet", "summary.json")
        ],
        embeddings=lambda w: member_embeddings(int(w.round)),
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
        method="sift|aliked_lightglue|disk_lightglue",
    threads: 2
    resources:
        # Omniglot seed 0: 10,450 pairs in ~4 s on 2 threads; demo 19,850 pairs in 13 s, 0.42 GB.
        # Photos at 512 px with 1,000 keypoints: ~30 ms per pair, i.e. ~25 min per 100k pairs.
        mem_mb=by_attempt(3000 if LOCAL_TORCH else 2000),
        # LightGlue on 2 CPU cores (ALIKED): Omniglot 4,180 pairs at 0.06 s per pair, the demo's
        # 7,940 at 0.093 s (754 s).
        runtime=by_attempt(240 if LOCAL_TORCH else 120),
    params:
        match=local_params(),
        members=lambda w: " ".join(shlex.quote(d) for d, _ in ensemble_members(int(w.round))),
        weights=lambda w: " ".join(str(wt) for _, wt in ensemble_members(int(w.round))),
        embeddings=lambda w: " ".join(shlex.quote(p) for p in member_embeddings(int(w.round))),
        folds=",".join(map(str, CV_FOLDS)),
        out_dir=lambda w: f"results/match/round{w.round}/local_{w.method}",
    shell:
        "{FLUKELINE} local-match --train {input.train:q} --features-train {input.features_train:q}"
        " --features-test {input.features_test:q} --members {params.members} --weights {params.weights}"
        " --embeddings {params.embeddings} --folds {params.folds} --params {params.match:q}"
        " --out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"
