"""One file per evaluation. Each eval turns (sampler, item) into a result row in three steps: ``generate``
(model calls), ``exact_scores`` + ``judge`` (scorers) and ``row``; ``summarize`` turns the rows into the
report's figures."""
