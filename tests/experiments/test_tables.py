"""Table machinery: paired intervals against scipy, summaries on hand-made runs, and the
reproduce command at runlocal size (complete, finite files; cached runs reused)."""

import json
import pathlib

import ml_collections
import numpy as np
import pytest
from scipy import stats

from configs import common, simulator, table1
from hgrank_jax.experiments import paired_interval, summarise, with_overrides
from hgrank_jax.experiments.report import markdown_table
from hgrank_jax.experiments.runs import Job
from hgrank_jax.experiments import tables
from hgrank_jax.experiments.tables import Row, runs_in_row


def test_paired_interval_equals_scipy_t_interval():
  rng = np.random.default_rng(0)
  for n in (2, 3, 5, 10):
    d = rng.normal(0.01, 0.02, n)
    got = paired_interval(d)
    low, high = stats.t.interval(0.95, n - 1, loc=d.mean(), scale=stats.sem(d))
    assert got["mean"] == pytest.approx(d.mean())
    assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
  single = paired_interval([0.3])
  assert single["mean"] == 0.3 and np.isnan(single["low"])


def test_summarise_pairs_runs_by_seed():
  def runs(values):
    return [{"seed": s, "test": {"logloss": v, "auc": v, "gauc": v}} for s, v in enumerate(values)]
  rows = [{"key": "a", "name": "A", "runs": runs([0.60, 0.62, 0.61])},
          {"key": "b", "name": "B", "runs": runs([0.61, 0.64, 0.61])}]
  table = summarise(rows, "a")
  b = table[1]
  assert b["gauc_mean"] == pytest.approx(np.mean([0.61, 0.64, 0.61]))
  assert b["gauc_std"] == pytest.approx(np.std([0.61, 0.64, 0.61], ddof=1))
  diffs = np.array([0.01, 0.02, 0.0])
  assert b["gauc_diff_mean"] == pytest.approx(diffs.mean())
  assert b["gauc_diff_high"] == pytest.approx(
      stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))[1])
  md = markdown_table(table, ["gauc"], "A")
  assert "| B | 3 | 0.6200 ± 0.0173 | +0.0100 [" in md


def test_fewer_than_three_seeds_give_no_interval():
  # Two paired seeds: a t interval with one degree of freedom is not printed.
  def runs(values):
    return [{"seed": s, "test": {"logloss": v, "auc": v, "gauc": v}} for s, v in enumerate(values)]
  rows = [{"key": "a", "name": "A", "runs": runs([0.60, 0.62])},
          {"key": "b", "name": "B", "runs": runs([0.61, 0.6302])}]
  b = summarise(rows, "a")[1]
  assert b["gauc_diff_mean"] == pytest.approx(0.0101) and b["gauc_diff_n"] == 2
  assert np.isnan(b["gauc_diff_low"]) and np.isnan(b["gauc_diff_high"])
  md = markdown_table(summarise(rows, "a"), ["gauc"], "A")
  assert "ΔGAUC vs A [95% t CI over ≥3 seeds]" in md.splitlines()[0]
  assert "| B | 2 | 0.6201 ± 0.0143 | +0.0101 [n/a (2 seeds)] |" in md
  # min_seeds=2 restores the t interval, equal to scipy's.
  low, high = stats.t.interval(0.95, 1, loc=0.0101, scale=stats.sem([0.01, 0.0102]))
  b2 = summarise(rows, "a", min_seeds=2)[1]
  assert b2["gauc_diff_low"] == pytest.approx(low) and b2["gauc_diff_high"] == pytest.approx(high)


def test_narrow_intervals_print_enough_decimals():
  # Bounds that agree to 4 decimals get more, so an interval never prints as [x, x].
  entry = {"name": "B", "seeds": 3, "gauc_mean": 0.6, "gauc_std": 0.0, "gauc_diff_mean": -0.0001,
           "gauc_diff_low": -0.000112, "gauc_diff_high": -0.000088, "gauc_diff_n": 3}
  md = markdown_table([entry], ["gauc"], "A")
  assert "-0.0001 [-0.00011, -0.00009]" in md


def test_job_numbers_runs_in_the_order_they_start():
  # A 2-point grid tunes with the first seed (2 runs), then trains 3 seeds; no grid: 3 runs.
  rows = [Row("a", "A", grid={"learning_rate": [1e-3, 3e-3]}), Row("b", "B")]
  job = Job(total=sum(runs_in_row(row, 3) for row in rows), started_at=100.0)
  assert job.total == 8
  first, second = job.context("A, seed 0"), job.context("A, seed 1")
  assert (first.label, first.title, first.job_started_at) == ("run 1/8", "A, seed 0", 100.0)
  assert second.label == "run 2/8"


def test_grid_points_and_overrides():
  row = Row("r", "R", grid={"learning_rate": [1, 2], "hgr": {"num_levels": [3, 4]}})
  assert row.grid_points() == [{"hgr.num_levels": 3, "learning_rate": 1},
                               {"hgr.num_levels": 3, "learning_rate": 2},
                               {"hgr.num_levels": 4, "learning_rate": 1},
                               {"hgr.num_levels": 4, "learning_rate": 2}]
  base = common.base_config()
  changed = with_overrides(base, {"hgr.num_levels": 2, "seed": 7})
  assert changed.hgr.num_levels == 2 and changed.seed == 7 and base.hgr.num_levels == 3
  with pytest.raises(KeyError, match="no such config key"):
    with_overrides(base, {"hgr.levels": 2})


@pytest.mark.slow
def test_reproduce_runlocal_writes_complete_tables_and_reuses_runs(tmp_path):
  from hgrank_jax.experiments import reproduce  # pylint: disable=g-import-not-at-top
  config = table1.get_config("simulator,runlocal")
  config.train.dataset = "synthetic:tiny"
  config.train.batch_size = 64
  config.train.eval_batch_size = 128
  config.train.num_train_steps = 2
  config.train.eval_every_steps = 2
  config.train.log_every_steps = 2
  config.figure4.codebook_sizes = (4,)
  config.figure4.levels = (2,)
  out = tmp_path / "simulator"
  reproduce.run(config, out, log=lambda _: None)
  for name in ("table1", "table3"):
    table = json.loads((out / f"{name}.json").read_text())["rows"]
    assert len(table) == (6 if name == "table1" else 4)
    for row in table:
      for metric in ("logloss", "auc", "gauc"):
        assert np.isfinite(row[f"{metric}_mean"]) and np.isfinite(row[f"{metric}_std"])
    assert (out / f"{name}.md").read_text().count("\n|") == len(table) + 2  # header, rule, rows
    assert (out / f"{name}.csv").read_text().count("\n") == len(table) + 1
  table2 = json.loads((out / "table2.json").read_text())
  assert set(table2["tables"]) == {"cold", "warm"}
  assert (out / "figure4.png").stat().st_size > 1000
  assert (out / "convergence.png").stat().st_size > 1000
  hardness = json.loads((out / "harder_negatives.json").read_text())
  assert [level["level"] for level in hardness["levels"]] == [1, 2, 3]  # the default L = 3
  assert all(np.isfinite(level["neg_grad"]) and level["neg_grad"] > 0
             for level in hardness["levels"])
  codes = json.loads((out / "codes_vs_clusters.json").read_text())
  assert codes["codes"] and {p["row"] for p in codes["probes"]} == {"LogLoss", "GroupCE"}
  assert 0.0 <= codes["oracle"]["relevance"]["gauc"] <= 1.0
  runs = sorted(p.name for p in (out / "runs").iterdir())
  mtimes = {p: (out / "runs" / p / "results.json").stat().st_mtime for p in runs}
  reproduce.run(config, out, log=lambda _: None)  # everything cached: no run trains again
  assert sorted(p.name for p in (out / "runs").iterdir()) == runs
  assert all((out / "runs" / p / "results.json").stat().st_mtime == mtimes[p] for p in runs)


def test_neutral_default_keys_keep_hashes_and_workdirs(tmp_path):
  # Keys added to the configs later, at the value that gives the old behaviour,
  # must not orphan cached runs: same hash, and the workdir guard accepts them.
  from hgrank_jax.experiments.runs import config_hash  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.checkpoint import NEUTRAL_DEFAULTS, prepare_workdir  # pylint: disable=g-import-not-at-top
  old = ml_collections.ConfigDict({"learning_rate": 1e-3, "model": {"name": "dnn"}})
  new = ml_collections.ConfigDict({**old.to_dict(), **NEUTRAL_DEFAULTS})
  assert config_hash(old) == config_hash(new)
  changed = ml_collections.ConfigDict({**new.to_dict(), "data_source": "streaming"})
  assert config_hash(changed) != config_hash(old)
  prepare_workdir(tmp_path / "w", old.to_dict())
  prepare_workdir(tmp_path / "w", new.to_dict())  # accepted
  with pytest.raises(ValueError, match="data_source"):
    prepare_workdir(tmp_path / "w", changed.to_dict())


def test_table1_variants_pick_dataset_rows_and_folder():
  core = table1.get_config("simulator_profiled,core")
  assert core.name == "simulator_profiled_core" and core.num_seeds == 5
  assert [row.key for row in core.table1_rows] == ["logloss", "listce", "groupce"]
  assert all(not row.grid for row in core.table1_rows)
  assert core.train.dataset == "synthetic:profiled" and tuple(core.train.model.bias_features) == ()
  assert table1.get_config("simulator").train.dataset == "synthetic:small"
  with pytest.raises(ValueError, match="unknown"):
    table1.get_config("simulator,fast")


def test_vmap_seeds_row_equals_seed_by_seed(tmp_path):
  """config.vmap_seeds trains a row's new seeds together: same best steps, metrics within 1e-3."""
  from hgrank_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  base = simulator.get_config("runlocal")
  base.dataset = "synthetic:tiny"
  base.batch_size, base.eval_batch_size = 64, 128
  base.num_train_steps, base.eval_every_steps, base.log_every_steps = 6, 2, 2
  dataset = load_dataset(base.dataset, seed=base.split_seed)
  row = tables.Row(key="logloss", name="LogLoss")
  sequential = tables.run_row(base, row, [0, 1], tmp_path / "one_by_one", dataset=dataset,
                              log=lambda _: None)
  base.vmap_seeds = True
  messages = []
  together = tables.run_row(base, row, [0, 1], tmp_path / "together", dataset=dataset,
                            log=messages.append)
  assert any("side by side" in m for m in messages)
  for a, b in zip(sequential["runs"], together["runs"]):
    assert a["best_step"] == b["best_step"]
    for split in ("valid", "test"):
      for metric in ("logloss", "auc", "gauc"):
        np.testing.assert_allclose(b[split][metric], a[split][metric], atol=1e-3)
  # The same run identity: the workdirs carry the same names in both folders.
  assert ({pathlib.Path(r["workdir"]).name for r in sequential["runs"]}
          == {pathlib.Path(r["workdir"]).name for r in together["runs"]})
