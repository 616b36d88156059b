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

import pandas as pd
import yaml

from flukeline.core.metrics import NEW_WHALE, summarise
from flukeline.match.decisions import run_decide
from flukeline.match.ensemble import run_ensemble
from flukeline.match.new_groups import pairwise_scores
from flukeline.match.settings import EnsembleSettings

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


def _scope_rows(run: Path, scratch: Path, configs: list[Path]) -> list[dict]:
    members, weights, params = _ensemble_call(run, configs)
    truth, _ = _truth(run)
    train = pd.read_parquet(run / "results/data/train.parquet")
    test = pd.read_parquet(run / "results/data/test.parquet")
    side_of = train[train["id"] != NEW_WHALE].groupby("id")["viewpoint"].agg(set) if "viewpoint" in train else None
    site_of = train[train["id"] != NEW_WHALE].groupby("id")["location"].agg(set) if "location" in train else None
    query = test.set_index("image")
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
        wrong_side = wrong_site = 0
        for image, listed in zip(predictions["image"], lists):
            ids = [i for i in listed if i != NEW_WHALE]
            side = query.at[image, "viewpoint"] if side_of is not None else ""
            site = query.at[image, "location"] if site_of is not None else ""
            wrong_side += bool(side) and any(side not in side_of.get(i, {side}) for i in ids)
            wrong_site += bool(site) and any(site not in site_of.get(i, {site}) for i in ids)
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
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scope", description=__doc__)
    parser.add_argument("run", type=Path, help="a finished run with the demo's field records")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="scope", help="<out>/<name>.md and .json")
    parser.add_argument("--configfile", type=Path, nargs="+", required=True, help="the run's config files, in order")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scope_rows = _scope_rows(args.run, Path(scratch), args.configfile)
        group_rows = _group_rows(args.run, Path(scratch))
    text = (
        f"`{' '.join(map(shlex.quote, ['python', '-m', 'bench.bench_scope', *sys.argv[1:]]))}` on {args.run}"
        f" ({time.strftime('%Y-%m-%d')})\n\n"
        "match.scope variants (the final ensemble fused again; members unchanged):\n\n"
        + _markdown(scope_rows)
        + "\n\nNew individuals grouped (match.decision.new_groups defaults):\n\n"
        + _markdown(group_rows)
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"scope": scope_rows, "groups": group_rows}, indent=1, default=float)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
