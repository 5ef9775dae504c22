"""Experiments: cached runs, paper tables with validation-chosen rows and paired intervals,
and their rendering (markdown, CSV, JSON, PNG)."""

from hgrank_jax.experiments.runs import cached_run, config_hash, with_overrides
from hgrank_jax.experiments.tables import Row, paired_interval, run_row, summarise
