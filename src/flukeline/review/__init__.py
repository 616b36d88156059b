"""Review: the match-review page (results/review/index.html). It is one self-contained HTML file on
which a person checks the final ensemble's top-5 candidates for each test image and exports their
decisions as CSV; the page template is review_page.html."""
