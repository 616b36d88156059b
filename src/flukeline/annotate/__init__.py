"""Annotate: `flukeline annotate` writes one self-contained HTML page (annotate_page.html) on which a
person draws the animal's box and clicks the detector's keypoints on a few hundred train photos,
then exports the boxes and keypoints CSVs that `data.annotations` reads (flukeline.data.annotations)."""
