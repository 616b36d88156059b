"""The synthetic humpback fluke dataset (`data.source: demo`) in the Kaggle 2019 layout, with full
ground truth (masks, keypoints, boxes) and the test identities outside the data root. The knobs
are in presets, the image plan in plan; individual, pose, scene and camera render the photos;
generate.generate_demo is the entry point and contact_sheet draws the overview."""
