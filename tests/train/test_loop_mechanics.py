"""train_and_evaluate's mechanics with a plain-jnp objective: devices, resume, early
stopping, the NaN guard, the config guard and metrics.jsonl."""

import json

import jax
import numpy as np
import pytest

from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.writers import read_metrics
from tests.train.helpers import logistic_objective, loop_config, tiny_dataset


def _params(workdir):
  from hgrank_jax.train.checkpoint import Checkpointer
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(workdir / "checkpoints")
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  return restored["state"], restored["loop"]


def test_eight_devices_match_one_device(tmp_path):
  data = tiny_dataset()
  results = {}
  for devices in (1, 8):
    config = loop_config(num_devices=devices, num_train_steps=10)
    results[devices] = train_and_evaluate(config, tmp_path / f"d{devices}",
                                          objective=logistic_objective(), dataset=data)
  state1, _ = _params(tmp_path / "d1")
  state8, _ = _params(tmp_path / "d8")
  for a, b in zip(jax.tree.leaves(state1["params"]), jax.tree.leaves(state8["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert results[1]["test"]["gauc"] == pytest.approx(results[8]["test"]["gauc"], abs=1e-6)


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path):
  data = tiny_dataset()
  config = loop_config(num_train_steps=40, eval_every_steps=10, log_every_steps=5)
  full = train_and_evaluate(config, tmp_path / "full", objective=logistic_objective(), dataset=data)
  # Stop at 17 (between evaluations) and at 30 (right after one), then finish.
  part = tmp_path / "part"
  assert train_and_evaluate(config, part, objective=logistic_objective(), dataset=data,
                            stop_after_step=17) == {"interrupted_at": 17}
  assert train_and_evaluate(config, part, objective=logistic_objective(), dataset=data,
                            stop_after_step=30) == {"interrupted_at": 30}
  resumed = train_and_evaluate(config, part, objective=logistic_objective(), dataset=data)
  assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]
  a, loop_a = _params(tmp_path / "full")
  b, loop_b = _params(part)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert loop_a == loop_b
  # metrics.jsonl reads as one run: the same eval records in the same order.
  strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]
  assert strip(read_metrics(part, "eval")) == strip(read_metrics(tmp_path / "full", "eval"))
  # Train records: every logging step once, plus one at the interruption (step 17).
  assert [r["step"] for r in read_metrics(part, "train")] == sorted(list(range(5, 41, 5)) + [17])
  # A finished workdir returns its results without training again.
  assert train_and_evaluate(config, part, objective=logistic_objective(), dataset=data) == resumed


def test_early_stopping_restores_best_validation_parameters(tmp_path):
  data = tiny_dataset()
  # A learning rate high enough to overfit quickly, so validation GAUC peaks early.
  config = loop_config(num_train_steps=200, eval_every_steps=2, learning_rate=0.5,
                       **{"early_stopping.patience": 3})
  results = train_and_evaluate(config, tmp_path, objective=logistic_objective(), dataset=data)
  evals = read_metrics(tmp_path, "eval")
  gaucs = [r["valid_gauc"] for r in evals]
  best = int(np.nanargmax(gaucs))
  assert results["best_step"] == evals[best]["step"]
  assert results["stopped_early"] and results["steps"] == evals[best]["step"] + 3 * 2
  assert results["valid"]["gauc"] == pytest.approx(gaucs[best], abs=1e-9)


def test_nan_guard_names_the_step_and_keeps_last_good_checkpoint(tmp_path):
  config = loop_config(num_train_steps=30, eval_every_steps=5, log_every_steps=1)
  with pytest.raises(FloatingPointError, match="step 8 .*last good checkpoint is step 5"):
    train_and_evaluate(config, tmp_path, objective=logistic_objective(nan_after_calls=7),
                       dataset=tiny_dataset())
  state, loop = _params(tmp_path)
  assert int(state["step"]) == 5
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def test_workdir_of_another_config_is_refused(tmp_path):
  data = tiny_dataset()
  train_and_evaluate(loop_config(num_train_steps=5), tmp_path, objective=logistic_objective(),
                     dataset=data)
  with pytest.raises(ValueError, match="learning_rate: workdir has 0.05, config has 0.1"):
    train_and_evaluate(loop_config(num_train_steps=5, learning_rate=0.1), tmp_path,
                       objective=logistic_objective(), dataset=data)


def test_bad_config_values_fail_before_compiling(tmp_path):
  with pytest.raises(ValueError, match="not divisible by the number of devices 8"):
    train_and_evaluate(loop_config(batch_size=60), tmp_path / "a", objective=logistic_objective(),
                       dataset=tiny_dataset())
  with pytest.raises(ValueError, match="early_stopping.metric"):
    train_and_evaluate(loop_config(**{"early_stopping.metric": "ndcg"}), tmp_path / "b",
                       objective=logistic_objective(), dataset=tiny_dataset())
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(PermissionError, match="not writable"):
    train_and_evaluate(loop_config(), blocker / "sub", objective=logistic_objective(),
                       dataset=tiny_dataset())
