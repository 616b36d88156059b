"""Shared pieces that every stage may import and that import no stage: errors, atomic writers
(io), image decoding, the figure writer, cross-validation folds, the Kaggle metrics, search and
threshold primitives (retrieval), model tensors and weight files, offline pretrained weights,
augmentation, training checkpoints and the one training loop, the worker pool (runtime), config
checks and the CLI's argument helpers. See docs/architecture.md."""
