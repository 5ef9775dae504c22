"""Every Table 1 objective trains through the real models and losses, and the launcher
runs a runlocal config end to end."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hgrank_jax import losses
from hgrank_jax.data import load_dataset
from hgrank_jax.models import RVQ_COLLECTION
from hgrank_jax.train.evaluation import DeviceSplit, evaluate_split
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.objectives import build_objective, hgr_model_from_config
from hgrank_jax.parallel.sharding import data_mesh
from hgrank_jax.train.steps import make_predict_step
from hgrank_jax.train.writers import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "configs"))
import common  # noqa: E402  pylint: disable=wrong-import-position


def _config(variant):
  config = common.apply_variants(common.base_config(), f"runlocal,{variant}")
  config.dataset = "synthetic:tiny"
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_train_steps = 4
  config.eval_every_steps = 2
  config.log_every_steps = 2
  config.learning_rate = 1e-2
  config.hgr.codebook_size = 4
  config.hgr.num_levels = 2
  config.model.bias_features = ("position",)
  return config


def _batch(dataset, n=64):
  cols = {k: jnp.asarray(v[:n]) for k, v in dataset.split("train").items()
          if k in dataset.spec.column_names}
  cols["mask"] = jnp.arange(n) < n - 5  # the last rows are padding
  return cols


@pytest.mark.parametrize("variant", list(common.OBJECTIVE_VARIANTS))
def test_objective_loss_matches_its_definition(variant):
  dataset = load_dataset("synthetic:tiny")
  config = _config(variant)
  objective = build_objective(config, dataset.spec)
  batch = _batch(dataset)
  variables = objective.init(jax.random.PRNGKey(0), batch)
  params = variables.pop("params")
  value, (_, aux) = objective.loss(params, variables, batch, jax.random.PRNGKey(1))
  assert np.isfinite(value)
  label = batch["click"]
  if config.objective.name == "pointwise":
    from hgrank_jax.models import make_scorer
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    logits = make_scorer("dnn", dataset.spec, **kwargs).apply({"params": params}, batch,
                                                               train=True).logits
    expected = losses.logloss(logits, label, where=batch["mask"])
    if "+" in config.objective.loss:
      expected += losses.get_loss(config.objective.loss.split("+")[1])(logits, label,
                                                                        where=batch["mask"])
    np.testing.assert_allclose(value, expected, rtol=1e-5)
  elif config.objective.name == "hgr":
    assert {"logloss", "aux_logloss", "group_ce", "log_sigma_l1", "rvq_perplexity_l2"} <= set(aux)
    np.testing.assert_allclose(value, aux["logloss"] + aux["aux_logloss"] + aux["group_ce"],
                               rtol=1e-5)
  logits = objective.predict(params, variables, batch)
  assert logits.shape == (64,) and np.all(np.isfinite(logits))
  grads = jax.grad(lambda p: objective.loss(p, variables, batch, jax.random.PRNGKey(1))[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_groupce_trains_and_logs_quantizer_statistics(tmp_path):
  config = _config("groupce")
  results = train_and_evaluate(config, tmp_path, dataset=load_dataset("synthetic:tiny"))
  assert all(np.isfinite(results["test"][k]) for k in ("logloss", "auc"))
  train_records = read_metrics(tmp_path, "train")
  assert [r["step"] for r in train_records] == [2, 4]
  assert {"rvq_perplexity_l1", "rvq_dead_fraction_l2", "group_ce"} <= set(train_records[0])
  # The harder-negatives report moved from the train step to evaluation.
  assert not any(k.startswith("hard_") for k in train_records[0])
  for record in read_metrics(tmp_path, "eval"):
    assert all(np.isfinite(record[f"valid_hard_neg_grad_l{level}"]) for level in (1, 2))


def test_harder_negatives_at_evaluation_equal_the_in_step_report():
  dataset = load_dataset("synthetic:tiny")
  config = _config("groupce")
  config.model.bias_features = ()  # train-mode logits are then the served ones
  objective = build_objective(config, dataset.spec)
  batch = _batch(dataset)
  batch["mask"] = jnp.ones(64, bool)  # one whole batch, as evaluation sees the split
  variables = objective.init(jax.random.PRNGKey(0), batch)
  params = variables.pop("params")
  _, (state, _) = objective.loss(params, variables, batch, jax.random.PRNGKey(1))  # k-means
  # As the train step computed it: the training forward pass's logits and codes.
  model = hgr_model_from_config(config, dataset.spec)
  out, _ = model.apply({"params": params, **state}, batch, train=True, where=batch["mask"],
                       mutable=[RVQ_COLLECTION], rngs={"rvq": jax.random.PRNGKey(2)})
  want = losses.negative_hardness_per_level(out.logits, batch["click"], codes=out.codes,
                                            where=batch["mask"], codebook_size=4)
  columns = {k: np.asarray(v) for k, v in batch.items() if k != "mask"}
  mesh = data_mesh(jax.devices()[:1])
  for got in (objective.predict.diagnostics(params, state, batch),
              evaluate_split(make_predict_step(objective, mesh), params, state, columns,
                             dataset.spec, 64, mesh),
              DeviceSplit(objective.predict, columns, dataset.spec, 64, mesh).metrics(params,
                                                                                      state)):
    for stat, values in want.items():
      for level in range(2):
        np.testing.assert_allclose(got[f"hard_{stat}_l{level + 1}"], values[level], rtol=1e-5)


def test_unknown_objective_is_named():
  config = _config("logloss")
  config.objective.name = "listwise"
  with pytest.raises(ValueError, match="config.objective.name must be one of"):
    build_objective(config, load_dataset("synthetic:tiny").spec)


@pytest.mark.slow
def test_launcher_runs_runlocal_config_end_to_end(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  command = [sys.executable, "-m", "launch.train", "--config",
             "configs/kuairand_sig.py:runlocal", "--workdir", str(tmp_path),
             "--config.num_train_steps=4", "--config.eval_every_steps=2"]
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 4/4" in result.stdout and "Best step" in result.stdout
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {r["kind"] for r in records} == {"train", "eval", "final"}
  assert json.loads((tmp_path / "results.json").read_text())["test"]["num_rows"] == 52041
  # Bad overrides are refused by ml_collections before anything runs.
  bad = subprocess.run(command[:-2] + ["--config.no_such_key=1"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "no_such_key" in bad.stderr
