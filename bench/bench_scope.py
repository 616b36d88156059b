"""match.scope and the new-individual groups (issue 31), measured on a finished run whose data has
the field records (the demo with `data.demo.overrides: {metadata: true, flanks: true,
new_test_photos: 3}`), without training anything again.

The final round's members are fused again (flukeline.match.ensemble.run_ensemble, into a scratch
folder) with match.scope off and with each rule on: viewpoint (mirrored_sides false: the demo's two
flanks are marked differently), same site, within 30 km, date order, and all of them. Per variant:
test MAP@5, known-identity top-1 (core.metrics.summarise against the demo's test truth), the
validation MAP@5 the threshold was calibrated on, the test (query, identity) candidates the scope
removed, the test photos with an incompatible identity (truth-side viewpoint) or another site's
in their top 5, and the ensemble's seconds. The members' and the local matcher's pairs are not
scoped: the pairs compared are the members' as before.

With --local: the local member (flukeline.match.local_member.run_local_member) run again on the
run's features and members, its pairs not scoped (match.scope off) and scoped by viewpoint, each
then fused by the final ensemble with the viewpoint rule (as the run fuses): pairs compared,
the local member's seconds (all, and scoring the pairs), its validation pairs (same / other) and
CV MAP@5, the test photos with a wrong-side id in its own top 5, and the ensemble's scores.

With --estimate: the viewpoint estimate (flukeline.match.viewpoint_estimate) with HIDDEN shares of
the photos' viewpoints hidden at random (train and test; the generator's sides are the truth):
its cross-validated accuracy and its accuracy on the hidden photos, 2-means clustering of the same
features against the sides (view groups without labels), and the final ensemble fused again with
the viewpoint rule on the tables with the labels hidden, filled by the estimate (forced, whatever
its accuracy), or filled by the truth with a share of the sides swapped (what an estimate of that
accuracy would do: the bar estimate_min_accuracy).

Then the decide rule's grouping of new individuals (flukeline.match.new_groups, default settings)
on the run's final ensemble and embeddings: photos grouped, groups, and pairwise precision and
recall against the demo's individuals (test_truth_attributes.csv), over the grouped photos and
over all the truly new photos.

    PYTHONPATH=src .venv/bin/python -m bench.bench_scope RUN_DIR --configfile config.yaml \
        workflow/presets/tiny.yaml MEASURE.yaml [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from flukeline.core.metrics import NEW_WHALE, summarise
from flukeline.match.decisions import run_decide
from flukeline.match.ensemble import run_ensemble
from flukeline.match.local_member import run_local_member
from flukeline.match.new_groups import pairwise_scores
from flukeline.match.settings import EnsembleSettings, LocalMatchSettings, ScopeSettings
from flukeline.match.viewpoint_estimate import estimate_viewpoints, photo_features

VARIANTS = {
    "no scope": {"viewpoint": False},
    "viewpoint": {"viewpoint": True},
    "same site": {"viewpoint": False, "same_site": True},
    "within 30 km": {"viewpoint": False, "within_km": 30.0},
    "date order": {"viewpoint": False, "date_order": True},
    "all rules": {"viewpoint": True, "same_site": True, "within_km": 30.0, "date_order": True},
}


def _merged(paths: list[Path]) -> dict:
    """The run's config: the config files merged in order (a later file's keys win, nested)."""

    def merge(base: dict, extra: dict) -> dict:
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    config: dict = {}
    for path in paths:
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def _ensemble_call(run: Path, configs: list[Path]) -> tuple[list[Path], list[float], dict]:
    """The final ensemble's members (from its summary.json), their configured weights (1.0: the
    fit starts from them) and the ensemble's params (EnsembleSettings of the run's config)."""
    summary = json.loads((run / "results/match/round0/ensemble/summary.json").read_text())
    members = [run / "results/match/round0" / name.split("@")[0] for name in summary["members"]]
    params = EnsembleSettings.pick(_merged(configs)["match"])
    return members, [1.0] * len(members), params


def _truth(run: Path) -> tuple[pd.Series, pd.Series]:
    attributes = next((run / "resources/demo").glob("*/test_truth_attributes.csv"))
    table = pd.read_csv(attributes)
    test = table[table["split"] == "test"].set_index("Image")
    return test["Id"], test["individual"].astype(str)


class Incompatible:
    """Counts the test photos whose top 5 holds an identity never photographed from the photo's
    side (or at its site): the truth-side check of a list."""

    def __init__(self, run: Path):
        train = pd.read_parquet(run / "results/data/train.parquet")
        known = train[train["id"] != NEW_WHALE]
        self.side_of = known.groupby("id")["viewpoint"].agg(set) if "viewpoint" in train else None
        self.site_of = known.groupby("id")["location"].agg(set) if "location" in train else None
        self.query = pd.read_parquet(run / "results/data/test.parquet").set_index("image")

    def count(self, images, lists) -> tuple[int, int]:
        wrong_side = wrong_site = 0
        for image, listed in zip(images, lists):
            ids = [i for i in listed if i != NEW_WHALE]
            side = self.query.at[image, "viewpoint"] if self.side_of is not None else ""
            site = self.query.at[image, "location"] if self.site_of is not None else ""
            wrong_side += bool(side) and any(side not in self.side_of.get(i, {side}) for i in ids)
            wrong_site += bool(site) and any(site not in self.site_of.get(i, {site}) for i in ids)
        return wrong_side, wrong_site


def _scope_rows(run: Path, scratch: Path, configs: list[Path]) -> list[dict]:
    members, weights, params = _ensemble_call(run, configs)
    truth, _ = _truth(run)
    incompatible = Incompatible(run)
    rows = []
    for name, scope in VARIANTS.items():
        out = scratch / name.replace(" ", "_")
        settings = {**params, "scope": {"mirrored_sides": False, **scope}}
        started = time.perf_counter()
        run_ensemble(
            members,
            weights,
            settings,
            0,
            out,
            out / "pseudo.parquet",
            run / "results/data/train.parquet",
            run / "results/data/test.parquet",
        )
        seconds = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text())
        predictions = pd.read_parquet(out / "test_predictions.parquet")
        lists = [p.split() for p in predictions["predicted"]]
        scores = summarise(truth.reindex(predictions["image"]).tolist(), lists)
        wrong_side, wrong_site = incompatible.count(predictions["image"], lists)
        removed = summary["scope"].get("test", {}).get("removed", 0)
        rows.append(
            {
                "variant": name,
                "test MAP@5": round(scores["map5"], 4),
                "known top-1": round(scores["known_top1"], 4),
                "CV MAP@5": round(summary["cv"]["map5"], 4),
                "candidates removed (test)": removed,
                "photos with a wrong-side id in top 5": wrong_side,
                "photos with another site's id in top 5": wrong_site,
                "seconds": round(seconds, 2),
            }
        )
    return rows


LOCAL_VARIANTS = {"pairs not scoped": {"viewpoint": False}, "pairs scoped (viewpoint)": {"viewpoint": True}}


def _local_call(run: Path, configs: list[Path]) -> dict:
    """The run's local_match inputs: its features, the embedding members (configured weight 1.0,
    the fit starts from them), their embeddings fold by fold, and LocalMatchSettings of the config."""
    summary = json.loads((run / "results/match/round0/ensemble/summary.json").read_text())
    names = [name.split("@")[0] for name in summary["members"]]
    local = next(name for name in names if name.startswith("local_"))
    members = [name for name in names if not name.startswith("local_")]
    own = json.loads((run / f"results/match/round0/{local}/summary.json").read_text())
    features = run / f"results/match/local/{own['method']}_{own['size']}"
    folds = sorted(int(p.name[4:]) for p in (run / f"results/embed/round0/{members[0]}").glob("fold*"))
    return {
        "local": local,
        "features_train": features / "features_train.npz",
        "features_test": features / "features_test.npz",
        "member_dirs": [run / "results/match/round0" / m for m in members],
        "member_weights": [1.0] * len(members),
        "embedding_paths": [
            run / f"results/embed/round0/{m}/fold{f}/embeddings.parquet" for m in members for f in folds
        ],
        "folds": folds,
        "params": LocalMatchSettings.pick(_merged(configs)["match"]),
    }


def _local_rows(run: Path, scratch: Path, configs: list[Path]) -> list[dict]:
    call = _local_call(run, configs)
    _, _, ensemble_params = _ensemble_call(run, configs)
    truth, _ = _truth(run)
    incompatible = Incompatible(run)
    train, test = run / "results/data/train.parquet", run / "results/data/test.parquet"
    rows = []
    for name, scope in LOCAL_VARIANTS.items():
        out = scratch / name.split()[1] / "round0"
        local = out / call["local"]
        started, cpu = time.perf_counter(), time.process_time()
        run_local_member(
            train,
            call["features_train"],
            call["features_test"],
            call["member_dirs"],
            call["member_weights"],
            call["embedding_paths"],
            call["folds"],
            {**call["params"], "scope": {"mirrored_sides": False, **scope}},
            local,
            threads=2,
            test_path=test,
        )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        own = json.loads((local / "summary.json").read_text())
        predictions = pd.read_parquet(local / "test_predictions.parquet")
        own_side, _ = incompatible.count(predictions["image"], [p.split() for p in predictions["predicted"]])
        # The final ensemble as the run fuses (viewpoint rule on), this local member in it.
        members = [*call["member_dirs"], local]
        settings = {**ensemble_params, "scope": {"mirrored_sides": False, "viewpoint": True}}
        run_ensemble(members, [1.0] * len(members), settings, 0, out / "ensemble", out / "pseudo.parquet", train, test)
        fused = pd.read_parquet(out / "ensemble/test_predictions.parquet")
        lists = [p.split() for p in fused["predicted"]]
        scores = summarise(truth.reindex(fused["image"]).tolist(), lists)
        calibration = own["evidence_calibration"]
        rows.append(
            {
                "variant": name,
                "pairs compared": own["cost"]["pairs"],
                "pairs per query": round(own["cost"]["pairs_per_query_mean"], 2),
                "local member seconds (CPU)": f"{seconds:.1f} ({cpu:.1f})",
                "seconds scoring pairs": round(own["cost"]["seconds"], 2),
                "seconds in the scope's checks": own["scope"].get("seconds", 0.0),
                "validation pairs same / other": f"{calibration.get('positives')} / {calibration.get('negatives')}",
                "local CV MAP@5": round(own["cv"]["map5"], 4),
                "local: photos with a wrong-side id in top 5": own_side,
                "removed by scope": json.dumps(own["scope"].get("removed", {})),
                "ensemble test MAP@5": round(scores["map5"], 4),
                "ensemble known top-1": round(scores["known_top1"], 4),
                "ensemble: photos with a wrong-side id in top 5": incompatible.count(fused["image"], lists)[0],
            }
        )
    return rows


HIDDEN = (0.5, 1.0)
SWAPPED_ACCURACY = (1.0, 0.95, 0.9, 0.8)


def _estimate_features(run: Path, photos: pd.DataFrame) -> np.ndarray:
    """The estimate's features of every photo, from the round-0 members' embeddings (all folds)."""
    members = sorted(p for p in (run / "results/embed/round0").iterdir() if p.is_dir())
    tables = [[pd.read_parquet(f / "embeddings.parquet") for f in sorted(m.glob("fold*"))] for m in members]
    return photo_features(photos, tables)


def _estimate_rows(run: Path, scratch: Path, configs: list[Path]) -> list[dict]:
    from sklearn.cluster import KMeans

    members, weights, params = _ensemble_call(run, configs)
    truth, _ = _truth(run)
    incompatible = Incompatible(run)
    train = pd.read_parquet(run / "results/data/train.parquet")
    test = pd.read_parquet(run / "results/data/test.parquet")
    photos = pd.concat([train[["image", "split", "viewpoint"]], test[["image", "split", "viewpoint"]]])
    photos = photos.reset_index(drop=True)
    features = _estimate_features(run, photos)
    sides = photos["viewpoint"].to_numpy()
    groups = KMeans(2, n_init=10, random_state=0).fit_predict(features)
    purity = max(np.mean((groups == 1) == (sides == "right")), np.mean((groups == 1) == (sides == "left")))
    rng = np.random.default_rng(0)
    settings = {**params, "scope": {"mirrored_sides": False, "viewpoint": True}}

    def fused(name: str, viewpoints: np.ndarray, extra: dict) -> dict:
        out = scratch / "estimate" / name.replace(" ", "_").replace("%", "")
        out.mkdir(parents=True, exist_ok=True)
        paths = {"train": out / "train.parquet", "test": out / "test.parquet"}
        train.assign(viewpoint=viewpoints[: len(train)]).to_parquet(paths["train"])
        test.assign(viewpoint=viewpoints[len(train) :]).to_parquet(paths["test"])
        started = time.perf_counter()
        run_ensemble(members, weights, settings, 0, out, out / "pseudo.parquet", paths["train"], paths["test"])
        seconds = time.perf_counter() - started
        predictions = pd.read_parquet(out / "test_predictions.parquet")
        lists = [p.split() for p in predictions["predicted"]]
        scores = summarise(truth.reindex(predictions["image"]).tolist(), lists)
        return {
            "variant": name,
            **extra,
            "test MAP@5": round(scores["map5"], 4),
            "known top-1": round(scores["known_top1"], 4),
            "photos with a wrong-side id in top 5": incompatible.count(predictions["image"], lists)[0],
            "seconds": round(seconds, 2),
        }

    rows = [fused("labelled (no label hidden)", sides, {})]
    for hidden_share in HIDDEN:
        hidden = rng.random(len(photos)) < hidden_share
        shown = np.where(hidden, "", sides)
        label = f"{hidden_share:.0%} hidden"
        table, summary = estimate_viewpoints(
            photos.assign(viewpoint=shown), features, ScopeSettings(estimate=True, estimate_min_accuracy=0.0)
        )
        estimated = table["estimated"].to_numpy()
        on_hidden = float(np.mean(estimated[hidden] == sides[hidden])) if summary["accuracy"] is not None else None
        accuracy = {
            "estimate CV accuracy": None if summary["accuracy"] is None else round(summary["accuracy"], 4),
            "estimate accuracy on the hidden photos": None if on_hidden is None else round(on_hidden, 4),
        }
        rows.append(fused(f"{label}, no estimate", shown, accuracy))
        if summary["accuracy"] is not None:
            rows.append(fused(f"{label}, estimate used whatever its accuracy", table["viewpoint"].to_numpy(), accuracy))
        for accuracy_level in SWAPPED_ACCURACY:
            swap = hidden & (rng.random(len(photos)) >= accuracy_level)
            flipped = np.where(sides == "left", "right", "left")
            filled = np.where(swap, flipped, sides)
            rows.append(fused(f"{label}, filled at accuracy {accuracy_level}", filled, {}))
    for row in rows:
        row["2-means purity (no labels)"] = round(float(purity), 4)
    return rows


def _group_rows(run: Path, scratch: Path) -> list[dict]:
    truth, individual = _truth(run)
    members = sorted((run / "results/embed/round0").iterdir())
    paths = [p / "embeddings.parquet" for m in members for p in sorted(m.glob("fold*"))]
    folds = [int(p.parent.name[4:]) for p in paths]
    outputs = {k: scratch / f"decide_{k}" for k in ("csv", "summary", "calibration", "png")}
    ensemble = run / "results/match/round0/ensemble"
    run_decide(
        ensemble / "val_topk.parquet",
        ensemble / "test_topk.parquet",
        ensemble / "summary.json",
        run / "results/data/train.parquet",
        run / "results/data/test.parquet",
        {},
        out=outputs["csv"],
        summary_out=outputs["summary"],
        calibration_out=outputs["calibration"],
        figure_out=outputs["png"],
        embedding_paths=paths,
        embedding_folds=folds,
    )
    table = pd.read_csv(outputs["csv"], keep_default_na=False)
    summary = json.loads(outputs["summary"].read_text())["new_groups"]
    grouped = table[table["new_group"] != ""].set_index("Image")["new_group"]
    over_grouped = pairwise_scores(grouped, individual)
    new_images = truth.index[truth == NEW_WHALE]
    # Over every truly new photo: the ungrouped ones each a group of their own.
    all_new = pd.Series([grouped.get(image, f"alone:{image}") for image in new_images], index=new_images)
    over_new = pairwise_scores(all_new, individual)
    return [
        {
            "photos grouped": summary["photos"],
            "groups": summary["groups"],
            "groups of 2+": summary["groups_of_several_photos"],
            "cut": None if summary["cut"] is None else round(summary["cut"], 4),
            "validation pair precision": summary["precision"],
            "pairwise precision (grouped)": over_grouped["precision"],
            "pairwise recall (grouped)": over_grouped["recall"],
            "truly new photos": len(new_images),
            "pairwise recall (truly new)": over_new["recall"],
            "pairwise precision (truly new)": over_new["precision"],
        }
    ]


def _markdown(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(column for row in rows for column in row))  # every row's, in order
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scope", description=__doc__)
    parser.add_argument("run", type=Path, help="a finished run with the demo's field records")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="scope", help="<out>/<name>.md and .json")
    parser.add_argument("--configfile", type=Path, nargs="+", required=True, help="the run's config files, in order")
    parser.add_argument("--local", action="store_true", help="also the local member's pairs with and without scope")
    parser.add_argument("--estimate", action="store_true", help="also the viewpoint estimate with labels hidden")
    parser.add_argument("--only-extra", action="store_true", help="only the --local / --estimate sections")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scope_rows = [] if args.only_extra else _scope_rows(args.run, Path(scratch), args.configfile)
        local_rows = _local_rows(args.run, Path(scratch), args.configfile) if args.local else []
        estimate_rows = _estimate_rows(args.run, Path(scratch), args.configfile) if args.estimate else []
        group_rows = [] if args.only_extra else _group_rows(args.run, Path(scratch))
    sections = [
        ("match.scope variants (the final ensemble fused again; members unchanged)", scope_rows),
        ("The local member's pairs (run again; the final ensemble fused with the viewpoint rule)", local_rows),
        ("The viewpoint estimate with labels hidden (the final ensemble fused again, viewpoint rule)", estimate_rows),
        ("New individuals grouped (match.decision.new_groups defaults)", group_rows),
    ]
    command = " ".join(map(shlex.quote, ["python", "-m", "bench.bench_scope", *sys.argv[1:]]))
    text = f"`{command}` on {args.run} ({time.strftime('%Y-%m-%d')})\n"
    for title, rows in sections:
        if rows:
            text += f"\n{title}:\n\n{_markdown(rows)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    results = {"scope": scope_rows, "local": local_rows, "estimate": estimate_rows, "groups": group_rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
