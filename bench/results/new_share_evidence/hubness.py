import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from features import *
from flukeline.match.member import embedding_lookup
from flukeline.match.templates import fuse_views
run=Path(sys.argv[1]); K=10
train=pd.read_parquet(run/"results/data/train.parquet")
def norm(x): return x/np.linalg.norm(x,axis=1,keepdims=True)
def scores(Q,G,gid):
    S=Q@G.T
    GG=G@G.T; GG[gid[:,None]==gid[None,:]]=-9
    rg=np.sort(GG,axis=1)[:,-K:].mean(1)
    out={}
    for name,Sc in (("raw",S),("imp",S-rg[None,:])):
        ids_u,inv=np.unique(gid,return_inverse=True)
        M=np.full((len(Sc),len(ids_u)),-9.0)
        for j in range(len(ids_u)):
            if ids_u[j]==NEW_WHALE: continue
            M[:,j]=Sc[:,inv==j].max(1)
        o=np.argsort(-M,1); top=M[np.arange(len(M)),o[:,0]]
        coh=np.take_along_axis(M,o[:,1:10],1).mean(1)
        out[name+"_top"]=top; out[name+"_lift"]=top-coh
    return out
embs=sorted((run/"results/embed").glob("round*"))[-1]
vf,mems=features(run,"val"); tf,_=features(run,"test")
for mem in sorted(p.name for p in embs.iterdir()):
    files=sorted((embs/mem).glob("fold*/embeddings.parquet"))
    if not files: continue
    lks={int(f.parent.name[4:]):embedding_lookup(pd.read_parquet(f),True) for f in files}
    first=pd.read_parquet(files[0]); timgs=first.loc[first.split=="test","image"].to_numpy()
    G=norm(fuse_views(*[l(train["image"],"train") for l in lks.values()])); Q=norm(fuse_views(*[l(timgs,"test") for l in lks.values()]))
    s=scores(Q,G,train["id"].to_numpy())
    for k,v in s.items(): tf.loc[timgs,f"{mem}_{k}"]=v
    for fold,l in lks.items():
        inf=train.fold.to_numpy()==fold; q=train[inf]; g=train[~inf]
        s=scores(norm(l(q["image"],"train")),norm(l(g["image"],"train")),g["id"].to_numpy())
        for k,v in s.items(): vf.loc[q["image"].to_numpy(),f"{mem}_{k}"]=v
hm=[m for m in mems if "local" not in m and f"{m}_imp_top" in vf]
sets={"ens":["ens_lift","ens_margin"],
 "ens+raw members":["ens_lift","ens_margin"]+[f"{m}_raw_top" for m in hm],
 "ens+imp members":["ens_lift","ens_margin"]+[f"{m}_imp_top" for m in hm],
 "ens+imp lifts":["ens_lift","ens_margin"]+[f"{m}_imp_lift" for m in hm],
 "imp members only":[f"{m}_imp_top" for m in hm]}
for name,cols in sets.items():
    X=vf[cols].to_numpy(float); sc=X.std(0)
    lr=LogisticRegression(max_iter=2000).fit(X/sc,vf.new)
    pv=lr.predict_proba(X/sc)[:,1]; pt=lr.predict_proba(tf[cols].to_numpy(float)/sc)[:,1]
    print(f"{name:18s} coef {np.round(lr.coef_[0],2)} AUROC val {roc_auc_score(vf.new,pv):.3f} test {roc_auc_score(tf.new,pt):.3f} P@20 val {prec_at(pv,vf.new.values):.3f} test {prec_at(pt,tf.new.values):.3f} P@40 test {prec_at(pt,tf.new.values,.4):.3f}")
