"""Align stage: every fluke mapped onto the landmark template (`align.template`) by a transform
fitted to detect's keypoints, or derived from its box, then cropped at each of `align.sizes`.
Tables: results/align/align.parquet (one transform per image) and, per size,
results/align/<W>x<H>/align.parquet with the crops under crops/{aligned,box,aligned_mask,box_mask}/."""
