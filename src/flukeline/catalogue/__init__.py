"""The catalogue of confirmed photos: `flukeline accept` reads the review page's export back and
writes the catalogue version that the next run's ingest adds to the training data."""
