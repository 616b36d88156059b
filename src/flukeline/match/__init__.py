"""Match stage: per member, identity templates and FAISS top-k candidates with flip and fold
fusion, the calibrated new_whale threshold and the predictions; then the ensemble of the members of
each pseudo-label round and the pseudo-labels for the next round. Tables under
results/match/round<r>/<member or ensemble>/: {val,test}_topk.parquet (image, rank, id,
similarity), {val,test}_predictions.parquet (image, predicted), calibration.{csv,png},
summary.json; and results/match/round<r>/pseudo_labels.parquet."""
