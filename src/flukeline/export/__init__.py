"""From identities to ecology (`flukeline export`, the export rule): the catalogue and the run's
decisions as Darwin Core occurrences, capture histories for MARK / RMark / secr, a table per
individual, the discovery curve and a first abundance estimate with the range the pending
review photos span. After the catalogue in the pipeline: it reads the data tables, a catalogue
version and decisions.csv, and no earlier stage reads it."""
