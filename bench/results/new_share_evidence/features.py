import sys, numpy as np, pandas as pd
from pathlib import Path
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[3]))
from bench.bench_peers import truth_file
from flukeline.core.metrics import NEW_WHALE
from sklearn.metrics import roc_auc_score
from sklearn.linear_model import LogisticRegression

def prec_at(p, y, rec=0.2):
    """Precision of the photos ranked most likely new (by p), down to `rec` of the truly new (y)."""
    o=np.argsort(-p); yy=y[o]; k=int(np.ceil(rec*y.sum())); tp=np.cumsum(yy); idx=np.searchsorted(tp,k); return tp[idx]/(idx+1)

def per_member(t, name, cohort=9):
    t=t[t["id"]!=NEW_WHALE].sort_values(["image","similarity"],ascending=[True,False],kind="stable")
    pl=t.groupby("image").cumcount()
    top=t[pl==0].set_index("image")
    sec=t[pl==1].set_index("image")["similarity"]
    coh=t[(pl>=1)&(pl<=cohort)].groupby("image")["similarity"].mean()
    out=pd.DataFrame({f"{name}_top":top["similarity"], f"{name}_id":top["id"]})
    out[f"{name}_margin"]=(out[f"{name}_top"]-sec.reindex(out.index)).fillna(out[f"{name}_top"])
    out[f"{name}_lift"]=(out[f"{name}_top"]-coh.reindex(out.index)).fillna(out[f"{name}_top"])
    return out

def features(run, split):
    base=sorted((Path(run)/"results/match").glob("round*"))[-1]
    mems=[p.name for p in base.iterdir() if (p/f"{split}_topk.parquet").exists()]
    ens=pd.read_parquet(base/"ensemble"/f"{split}_topk.parquet")
    f=per_member(ens,"ens")
    for m in mems:
        if m=="ensemble": continue
        t=pd.read_parquet(base/m/f"{split}_topk.parquet")
        g=per_member(t,m).reindex(f.index)
        f=f.join(g)
        f[f"{m}_agree"]=(f[f"{m}_id"]==f["ens_id"]).astype(float)
        f[f"{m}_top"]=f[f"{m}_top"].fillna(0); f[f"{m}_lift"]=f[f"{m}_lift"].fillna(0); f[f"{m}_margin"]=f[f"{m}_margin"].fillna(0)
    if split=="val":
        truth=ens.drop_duplicates("image").set_index("image")["truth"]
        f["fold"]=ens.drop_duplicates("image").set_index("image")["fold"]
    else:
        truth=pd.read_csv(truth_file(Path(run)),dtype=str,keep_default_na=False).set_index("Image")["Id"]
    f["truth"]=truth.reindex(f.index)
    f["new"]=(f["truth"]==NEW_WHALE).astype(int)
    f["right"]=(f["ens_id"]==f["truth"]).astype(int)
    return f, [m for m in mems if m!="ensemble"]
