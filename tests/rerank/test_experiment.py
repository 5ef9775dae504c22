"""A miniature of launch.rerank: every row present, metrics in range, files written."""

import json
import os
import sys

import numpy as np
import pytest

from hgrank_jax.rerank import experiment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
import rerank as rerank_config  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.slow
def test_miniature_comparison(tmp_path):
  config = rerank_config.get_config("runlocal")
  config.num_lists, config.num_train, config.num_valid = 120, 60, 30
  config.train.num_steps = 4
  config.train.dual_every = 2
  config.learned_order = ("prm_quota", "seq2slate_quota")
  config.grids = {name: values[:1] for name, values in config.grids.items()}
  config.pareto_weights = (0.1,)
  config.generator_evaluator.num_steps = 2
  summary = experiment.run(config, log=lambda _: None)
  text = experiment.write(summary, str(tmp_path))
  rows = summary["rows"]
  assert list(rows) == ["initial order", "MMR", "DPP", "calibrated", "coverage",
                        "constrained greedy", "exact (MILP)", "PRM + quota", "Seq2Slate + quota",
                        "generator-evaluator"]
  for name, row in rows.items():
    assert 0 <= row["ndcg"] <= 1 + 1e-6 and 0 <= row["quota_satisfied"] <= 1, name
    assert np.isfinite([row[c] for c in experiment.COLUMNS]).all(), name
  # The exact solver is optimal for the objective the greedy also maximises.
  assert summary["greedy_gap"]["mean_relative_gap"] >= -1e-9
  # Every row decoded under the quota masks (the evaluator picks among such lists) meets it.
  for name in ("constrained greedy", "exact (MILP)", "PRM + quota", "Seq2Slate + quota",
               "generator-evaluator"):
    assert rows[name]["quota_satisfied"] == 1.0, name
  assert json.load(open(tmp_path / "rerank.json"))["rows"].keys() == rows.keys()
  assert "| constrained greedy |" in text and (tmp_path / "rerank.csv").exists()
  assert len(summary["pareto"]) == 1 and (tmp_path / "pareto.png").exists()
