# Photo-quality evidence for P(new): the run's own box (results/detect/boxes.parquet) in the photo, its area, sharpness (log variance of the Laplacian, Pech-Pacheco et al. 2000) and contrast. Run: PYTHONPATH=src python bench/results/new_share_evidence/photo_quality.py RUN
import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from features import *
import cv2
run=Path(sys.argv[1])
vf,mems=features(run,"val"); tf,_=features(run,"test")
b=pd.read_parquet(run/"results/detect/boxes.parquet").set_index("image")
root=next((run/"resources").rglob("kaggle"))
def q(img,split):
    a=cv2.imread(str(root/split/img),cv2.IMREAD_GRAYSCALE)
    if img in b.index:
        x0,y0,x1,y1=b.loc[img,["x0","y0","x1","y1"]].astype(int)
        c=a[max(y0,0):max(y1,y0+2),max(x0,0):max(x1,x0+2)]
    else: c=a
    if c.size<4: c=a
    c=cv2.resize(c,(256,128),interpolation=cv2.INTER_AREA) if min(c.shape)>1 else c
    return np.log((y1-y0)*(x1-x0)+1) if img in b.index else np.log(a.size), np.log(cv2.Laplacian(c,cv2.CV_64F).var()+1e-3), c.std()
for f,split in ((vf,"train"),(tf,"test")):
    Q=np.array([q(i,split) for i in f.index]); f["q_area"],f["q_sharp"],f["q_contrast"]=Q.T
sets={"ens":["ens_lift","ens_margin"],"+area":["ens_lift","ens_margin","q_area"],"+sharp":["ens_lift","ens_margin","q_sharp"],"+contrast":["ens_lift","ens_margin","q_contrast"],"+all q":["ens_lift","ens_margin","q_area","q_sharp","q_contrast"]}
print(run, "val",len(vf),"test",len(tf))
print(tf.groupby("new")[["q_area","q_sharp","q_contrast"]].mean())
for name,cols in sets.items():
    X=vf[cols].to_numpy(float); mu=X.mean(0); sc=X.std(0); sc[sc==0]=1
    lr=LogisticRegression(max_iter=2000).fit((X-mu)/sc,vf.new)
    pv=lr.predict_proba((X-mu)/sc)[:,1]; pt=lr.predict_proba((tf[cols].to_numpy(float)-mu)/sc)[:,1]
    print(f"{name:10s} coef {np.round(lr.coef_[0],2)} AUROC val {roc_auc_score(vf.new,pv):.3f} test {roc_auc_score(tf.new,pt):.3f} P@20 val {prec_at(pv,vf.new.values):.3f} test {prec_at(pt,tf.new.values):.3f} P@40 test {prec_at(pt,tf.new.values,.4):.3f}")
