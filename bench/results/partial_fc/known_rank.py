import json, sys
import pandas as pd
from pathlib import Path
for run in sys.argv[1:]:
    r = Path(run) / "results"
    truth_path = next(r.parent.glob("resources/omniglot/seed*/test_truth.csv"), None) or next(r.parent.glob("resources/**/test_truth.csv"))
    truth = pd.read_csv(truth_path).set_index("Image")["Id"]
    m = json.load(open(r / "metrics.json"))["test"]
    for member in (sys.argv[0] and __import__("os").environ.get("MEMBERS","ensemble local_sift").split()):
        f = r / f"match/round0/{member}/test_topk.parquet"
        if not f.exists(): continue
        t = pd.read_parquet(f); t = t[t["id"] != "new_whale"]
        known = truth[truth != "new_whale"]
        rank = {}
        for img, g in t.groupby("image"):
            ids = list(g.sort_values("rank")["id"])
            rank[img] = ids.index(truth[img]) + 1 if img in truth and truth[img] in ids else 99
        ranks = pd.Series([rank.get(i, 99) for i in known.index])
        mm = m["methods"].get(f"{member}@round0", {})
        print(f"{run} {member}: known rank-1 {(ranks==1).mean():.3f} rank-5 {(ranks<=5).mean():.3f}; test MAP@5 {mm.get('map5',0):.3f}; submission-list known top-1 {mm.get('known_top1',0):.3f}")
