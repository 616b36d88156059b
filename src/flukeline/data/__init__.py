"""Data stage: the photos as validated tables. When no data root is given it writes one in the
Kaggle layout (the synthetic flukes of flukeline.data.demo, or Omniglot characters), then ingests
the root into results/data/train.parquet and test.parquet (image, path, id, width, height,
grayscale, sha1, fold, split, mask_path), rejected.csv and the annotations' keypoints.parquet and
boxes.parquet."""
