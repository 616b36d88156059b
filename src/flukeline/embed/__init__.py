"""Embed stage: one metric-learning model per ensemble member, pseudo-label round and validation
fold (a timm backbone with margin and triplet losses, `embed.members`), and the embeddings of every
crop and of its mirror image. Files under results/embed/round<r>/<member>/fold<k>/:
model.safetensors, history.csv, curves.png and embeddings.parquet (image, split, embedding,
embedding_flip)."""
