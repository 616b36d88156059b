"""Evaluate: scoring, and the deliverables around the match stage. The all-new_whale baseline
(results/baseline/), the Kaggle submission (results/submission.csv), results/metrics.json (the
only reader of the test identities), the report's data summary figure and metrics table, and two
reference baselines that people run by hand (raw-pixel 1-NN, softmax classifier)."""
