"""Detect stage: a fluke mask, keypoints and a box for every train and test image. With
`detect.method: learned` a U-Net (mask + one heatmap per keypoint) trains on the annotated train
images and predicts every image; `threshold` / `none` box each image classically. Tables:
results/detect/boxes.parquet, keypoints.parquet, masks.parquet (+ masks/); the learned detector
also writes model.safetensors and metrics.json."""
