# Gallery for `flukeline identify` / `flukeline add`: which models and settings turn a new photo
# into the final ensemble's embeddings, and the run's training images as the known sightings.
# Only a manifest (paths into results/): the models and embeddings stay where the run wrote them.


def gallery_members():
    """The final round's ensemble members: name, crop size, weight, one model and one embeddings
    table per validation fold (fold fusion, as match_member does for test images)."""
    members = []
    for match_dir, weight in ensemble_members(FINAL_ROUND):
        round_dir, member = Path(match_dir).parent.name, Path(match_dir).name
        folder = f"results/embed/{round_dir}/{member}"
        members.append(
            {
                "name": f"{member}@{round_dir}",
                "size": member_size(member),
                "weight": weight,
                "models": [f"{folder}/fold{k}/model.safetensors" for k in CV_FOLDS],
                "embeddings": [f"{folder}/fold{k}/embeddings.parquet" for k in CV_FOLDS],
            }
        )
    return members


def gallery_settings():
    detect = {"method": config["detect"]["method"], "min_area_fraction": config["detect"]["min_area_fraction"]}
    if config["detect"]["method"] == "learned":
        detect.update(config["detect"]["boxes"])
    return {
        "train": "results/data/train.parquet",
        "detect": detect,
        "detect_model": "results/detect/model.safetensors" if config["detect"]["method"] == "learned" else None,
        "align": {k: config["align"][k] for k in ALIGN_TRANSFORM_KEYS if k in config["align"]},
        "match": {k: config["match"][k] for k in MATCH_KEYS if k in config["match"]},
        "members": gallery_members(),
        "ensemble_summary": f"results/match/round{FINAL_ROUND}/ensemble/summary.json",
    }


rule gallery:
    input:
        train="results/data/train.parquet",
        summary=f"results/match/round{FINAL_ROUND}/ensemble/summary.json",
        models=[p for m in gallery_members() for p in m["models"] + m["embeddings"]],
        detector=["results/detect/model.safetensors"] if config["detect"]["method"] == "learned" else [],
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
        settings=params_json(gallery_settings()),
    shell:
        "{FLUKELINE} gallery --params {params.settings:q} --out-dir results/gallery > {log:q} 2>&1"
