"""Gallery: user tools on top of a finished run (or of no run at all). They identify new photos
against the known individuals, add confirmed sightings without retraining, and recalibrate the
new_whale threshold. A gallery folder holds gallery.json (models plus detection, alignment and
matching settings; the `gallery` rule writes results/gallery/gallery.json) and sightings.parquet
(the added sightings with their embeddings)."""
