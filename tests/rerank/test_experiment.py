"""A miniature of launch.rerank: every row present, metrics in range, files written."""

import json
import os
import sys

import numpy as np
import pytest

from hgrank_jax.experiments import rerank as experiment
from hgrank_jax.experiments import rerank_lists as list_sources

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


@pytest.mark.slow
def test_kuairand_lists_end_to_end(tmp_path):
  """Official-format KuaiRand logs through the whole comparison, with quotas some days cannot meet."""
  from tests.data.kuairand_daily import write_daily_logs  # pylint: disable=g-import-not-at-top
  write_daily_logs(tmp_path / "logs", num_users=20)
  config = rerank_config.get_config("kuairand,runlocal")
  config.kuairand.update(manual_dir=str(tmp_path / "logs"), release="pure", valid_days=1,
                         test_days=2, min_candidates=10, max_lists=(60, 20, 40))
  # At most one item per category in a list of 12: more categories than some days offer.
  config.max_count, config.list_length = 1, 12
  config.train.num_steps = 4
  config.learned_order = ("prm_quota", "seq2slate_quota")
  config.grids = {name: values[:1] for name, values in config.grids.items()}
  config.pareto_weights = ()
  config.generator_evaluator.num_steps = 2
  summary = experiment.run(config, log=lambda _: None)
  text = experiment.write(summary, str(tmp_path / "out"))
  data, rows, gap = summary["data"], summary["rows"], summary["greedy_gap"]
  assert data["dataset"] == "kuairand:pure" and data["lists_per_split"][0] == 60
  assert all(0 < count <= cap for count, cap in zip(data["lists_per_split"], (60, 20, 40)))
  assert data["num_categories"] > 10 and data["dates"]["test"][0] > data["dates"]["valid"][1]
  assert "| method | label utility |" in text and "NDCG@k against observed is_click" in text
  # Reference for which test lists can meet the quota: >= 10 distinct categories among candidates.
  lists, splits, _, _ = list_sources.load_lists(config, log=lambda _: None)
  test = splits[2]
  categories, where = lists.inputs["category"][test], lists.inputs["where"][test]
  possible = np.array([len(set(c[w])) >= config.list_length for c, w in zip(categories, where)])
  assert 0 < possible.mean() < 1
  assert gap["feasible_lists"] == pytest.approx(possible.mean())
  assert gap["greedy_infeasible_rate"] == 0.0 and gap["mean_relative_gap"] >= -1e-9
  # Where the quota can be met the constrained decoders meet it; elsewhere nothing can.
  for name in ("constrained greedy", "exact (MILP)", "PRM + quota", "Seq2Slate + quota",
               "generator-evaluator"):
    assert rows[name]["quota_satisfied"] == pytest.approx(possible.mean()), (name, rows[name])
  for name, row in rows.items():
    assert 0 <= row["ndcg"] <= 1 + 1e-6 and np.isfinite([row[c] for c in experiment.COLUMNS]).all()


def test_kuairand_without_manual_dir_or_unknown_dataset_is_named():
  config = rerank_config.get_config("kuairand,runlocal")
  with pytest.raises(ValueError, match="--config.kuairand.manual_dir"):
    list_sources.load_lists(config, log=lambda _: None)
  config.kuairand.manual_dir, config.scorer_workdir = "/somewhere", "/a/run"
  with pytest.raises(ValueError, match="scores simulator lists only"):
    list_sources.load_lists(config, log=lambda _: None)
  config.dataset = "movielens"
  with pytest.raises(ValueError, match="'simulator' or 'kuairand'"):
    list_sources.load_lists(config, log=lambda _: None)
  with pytest.raises(ValueError, match="known: runlocal, kuairand"):
    rerank_config.get_config("kuairnd")
