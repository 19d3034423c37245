"""One file per evaluation. Each eval turns (sampler, item) into a result row in three steps, kept apart so
the local run and the Weave run share them: ``generate`` (model calls), ``score`` (exact scorers + judges) and
``row``; ``summarize`` turns the rows into the report's figures."""
