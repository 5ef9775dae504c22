"""Simulator request lists re-sorted by a trained Layer 1 scorer, against the model applied row by row."""

import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data import load_dataset, make_request_lists
from hgrank_jax.data.sim.synthetic import config_for_view, log_feature_spec
from hgrank_jax.rerank import learned
from hgrank_jax.experiments import layer1_scores

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "configs"))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from hgrank_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("layer1_run")
  config = common.apply_variants(common.base_config(), "runlocal")
  config.dataset, config.batch_size, config.eval_batch_size = "synthetic:tiny", 64, 128
  config.num_train_steps, config.eval_every_steps, config.log_every_steps = 6, 3, 3
  train_and_evaluate(config, workdir, dataset=load_dataset("synthetic:tiny"))
  return workdir, config


def test_candidates_are_resorted_by_the_runs_serving_logits(run):
  from hgrank_jax.experiments.mechanisms import restore_best  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.objectives import scorer_from_config  # pylint: disable=g-import-not-at-top
  workdir, config = run
  sim = config_for_view("tiny", seed=0)
  lists = make_request_lists(sim)
  rescored = layer1_scores.rescore_with_run(workdir, lists, sim)
  # Reference: the scorer applied to each request's candidates as one batch, bias tower off.
  params, _ = restore_best(workdir)
  model = scorer_from_config(config, log_feature_spec(sim))
  x, y = lists.inputs, rescored.inputs
  for r in range(len(x["user_id"])):
    valid = x["where"][r]
    batch = {"user_id": jnp.full(valid.sum(), x["user_id"][r]),
             "item_id": jnp.asarray(x["item_id"][r][valid]),
             "category": jnp.asarray(x["category"][r][valid]),
             "business": jnp.asarray(x["business"][r][valid]),
             "position": jnp.zeros(valid.sum(), jnp.int32),
             "is_random": jnp.zeros(valid.sum(), jnp.int32)}
    logits = np.asarray(model.apply({"params": params}, batch, train=False,
                                    use_bias_tower=False).logits)
    order = np.argsort(-logits, kind="stable")
    count = int(valid.sum())
    np.testing.assert_array_equal(y["item_id"][r, :count], x["item_id"][r][valid][order])
    np.testing.assert_allclose(y["initial_score"][r, :count], logits[order], rtol=1e-5, atol=1e-5)
    assert y["where"][r, :count].all() and not y["where"][r, count:].any()
    # The truth travels with its candidate.
    np.testing.assert_array_equal(rescored.truth["relevance"][r, :count],
                                  lists.truth["relevance"][r][valid][order])
    np.testing.assert_array_equal(y["item_embedding"][r, :count],
                                  x["item_embedding"][r][valid][order])
  np.testing.assert_array_equal(y["history_category_counts"], x["history_category_counts"])
  # The personalised user vector: the run's user tower on each request's user.
  users = {"user_id": jnp.asarray(x["user_id"]), "item_id": jnp.zeros_like(x["user_id"]),
           "category": jnp.zeros_like(x["user_id"]), "business": jnp.zeros_like(x["user_id"]),
           "position": jnp.zeros_like(x["user_id"]), "is_random": jnp.zeros_like(x["user_id"])}
  e_u = np.asarray(model.apply({"params": params}, users, method=lambda m, b: m.encode(b)[0]))
  np.testing.assert_allclose(y["user_embedding"], e_u, rtol=1e-5, atol=1e-6)
  user = learned.model_inputs(y, num_categories=sim.num_categories,
                              num_business=sim.num_business_lines)["user"]
  assert user.shape == (len(x["user_id"]), sim.num_categories + e_u.shape[1])
  np.testing.assert_allclose(user[:, sim.num_categories:], e_u, rtol=1e-6)


def test_another_world_or_dataset_is_refused(run, tmp_path):
  workdir, _ = run
  other = config_for_view("tiny", seed=1)
  with pytest.raises(ValueError, match="another simulated world.*seed: lists 1, scorer 0"):
    layer1_scores.score_candidates(workdir, make_request_lists(other), other)
  (tmp_path / "config.json").write_text(json.dumps({"dataset": "kuairand_sig:paper",
                                                    "split_seed": 0}))
  with pytest.raises(ValueError, match="only runs on the simulator's logs"):
    layer1_scores.run_world(tmp_path)
  with pytest.raises(FileNotFoundError, match="launch.train run"):
    layer1_scores.run_world(tmp_path / "nothing")
