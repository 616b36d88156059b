import json, sys
import numpy as np, pandas as pd
from pathlib import Path
from flukeline.match.new_whale_threshold import ranked_predictions, prediction_scores
for run in sys.argv[1:]:
    r = Path(run)
    truth = pd.read_csv(next(r.glob("resources/**/test_truth.csv"))).set_index("Image")["Id"]
    t = pd.read_parquet(r / "results/match/round0/ensemble/test_topk.parquet")
    t["truth"] = t["image"].map(truth)
    s = json.load(open(r / "results/match/round0/ensemble/summary.json"))
    used = s["threshold"]
    grid = np.round(np.arange(-0.2, 1.0001, 0.01), 2)
    maps = {th: prediction_scores(ranked_predictions(t, th))["map5"] for th in grid}
    best = max(maps, key=maps.get)
    print(f"{run}: threshold {used:.2f} MAP@5 {prediction_scores(ranked_predictions(t, used))['map5']:.3f}; hindsight-best {best:.2f} MAP@5 {maps[best]:.3f}")
