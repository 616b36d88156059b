import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from features import *
for run in sys.argv[1:]:
    v,mems=features(run,"val"); t,_=features(run,"test")
    print("==",run, "val",len(v),v.new.mean().round(3),"test",len(t),t.new.mean().round(3), mems)
    sets={"ens top,margin":["ens_top","ens_margin"],"ens lift,margin":["ens_lift","ens_margin"]}
    agree=[f"{m}_agree" for m in mems]
    sets["+agree"]=["ens_lift","ens_margin"]+agree
    loc=[m for m in mems if "local" in m]
    if loc: sets["+local top"]=["ens_lift","ens_margin",f"{loc[0]}_top"]
    sets["+member lifts"]=["ens_lift","ens_margin"]+[f"{m}_lift" for m in mems]
    sets["all"]=["ens_lift","ens_margin","ens_top"]+agree+[f"{m}_{k}" for m in mems for k in ("top","lift","margin")]
    for name,cols in sets.items():
        X=v[cols].to_numpy(float); sc=X.std(0); sc[sc==0]=1
        lr=LogisticRegression(C=1.0,max_iter=2000).fit(X/sc,v.new)
        pv=lr.predict_proba(X/sc)[:,1]; pt=lr.predict_proba(t[cols].to_numpy(float)/sc)[:,1]
        for_single=roc_auc_score(t.new,-t[cols[0]]) 
        print(f"  {name:18s} AUROC val {roc_auc_score(v.new,pv):.3f} test {roc_auc_score(t.new,pt):.3f}  prec@20%rec test {prec_at(pt,t.new.values):.3f} @40% {prec_at(pt,t.new.values,0.4):.3f}")
