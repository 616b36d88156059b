# Query-neighbour evidence for P(new): each photo's nearest other photo of the same batch (test, or one validation fold), its similarity, its lift, whether it names the same top identity. Run: PYTHONPATH=src python bench/results/new_share_evidence/query_neighbours.py RUN
import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from features import *
from flukeline.match.member import embedding_lookup
from flukeline.match.templates import fuse_views
def norm(x): return x/np.linalg.norm(x,axis=1,keepdims=True)
run=Path(sys.argv[1])
train=pd.read_parquet(run/"results/data/train.parquet")
embs=sorted((run/"results/embed").glob("round*"))[-1]
vf,mems=features(run,"val"); tf,_=features(run,"test")
# fused embedding over members (concat of normalized member embeddings)
Qt=[];Qv={}
timgs=None
for mem in sorted(p.name for p in embs.iterdir()):
    files=sorted((embs/mem).glob("fold*/embeddings.parquet"))
    if not files: continue
    lks={int(f.parent.name[4:]):embedding_lookup(pd.read_parquet(f),True) for f in files}
    first=pd.read_parquet(files[0]); ti=first.loc[first.split=="test","image"].to_numpy()
    if timgs is None: timgs=ti
    Qt.append(norm(fuse_views(*[l(timgs,"test") for l in lks.values()])))
    for fold,l in lks.items():
        q=train[train.fold.to_numpy()==fold]
        Qv.setdefault(fold,[]).append((q["image"].to_numpy(),norm(l(q["image"],"train"))))
def batch_feats(imgs,parts,F):
    E=norm(np.concatenate(parts,1)); S=E@E.T; np.fill_diagonal(S,-9)
    j=S.argmax(1); s=S.max(1)
    f=F.loc[imgs]
    out=pd.DataFrame(index=imgs)
    out["nn_sim"]=s
    out["nn_lift"]=f["ens_lift"].to_numpy()[j]
    out["nn_agree"]=(f["ens_id"].to_numpy()[j]==f["ens_id"].to_numpy()).astype(float)
    # soft: mean lift of mates weighted by softmax of sim
    w=np.exp((S-S.max(1,keepdims=True))/0.05); np.fill_diagonal(w,0); w/=w.sum(1,keepdims=True)
    out["mates_lift"]=w@f["ens_lift"].to_numpy()
    return out
tb=batch_feats(timgs,Qt,tf); tf=tf.join(tb)
for fold,lst in Qv.items():
    imgs=lst[0][0]; vb=batch_feats(imgs,[e for _,e in lst],vf)
    for c in vb: vf.loc[imgs,c]=vb[c]
vf=vf.dropna(subset=["nn_sim"])
sets={"ens":["ens_lift","ens_margin"],"+nn_sim":["ens_lift","ens_margin","nn_sim"],"+nn_lift,nn_sim":["ens_lift","ens_margin","nn_sim","nn_lift"],
 "+nn_agree":["ens_lift","ens_margin","nn_agree"],"+mates_lift":["ens_lift","ens_margin","mates_lift"],"+all":["ens_lift","ens_margin","nn_sim","nn_lift","nn_agree","mates_lift"]}
print(run, "val",len(vf),vf.new.mean().round(3),"test",len(tf),tf.new.mean().round(3))
for name,cols in sets.items():
    X=vf[cols].to_numpy(float); sc=X.std(0); sc[sc==0]=1
    lr=LogisticRegression(max_iter=2000).fit(X/sc,vf.new)
    pv=lr.predict_proba(X/sc)[:,1]; pt=lr.predict_proba(tf[cols].to_numpy(float)/sc)[:,1]
    print(f"{name:18s} coef {np.round(lr.coef_[0],2)} AUROC val {roc_auc_score(vf.new,pv):.3f} test {roc_auc_score(tf.new,pt):.3f} P@20 val {prec_at(pv,vf.new.values):.3f} test {prec_at(pt,tf.new.values):.3f} P@40 test {prec_at(pt,tf.new.values,.4):.3f}")
