"""Generator-evaluator: feasible proposals, an order-aware list value, a learned pick."""

import jax
import numpy as np
import pytest

from hgrank_jax import rerank
from hgrank_jax.data import SimulatorConfig, list_utility, make_request_lists
from hgrank_jax.models.rerankers import ListEvaluator
from hgrank_jax.rerank import generator_evaluator as ge
from hgrank_jax.rerank import learned


def _satisfies(sequence, hi, max_run):
  counts = np.bincount(sequence, minlength=len(hi))
  runs = [1]
  for a, b in zip(sequence[:-1], sequence[1:]):
    runs.append(runs[-1] + 1 if a == b else 1)
  return bool((counts <= hi).all() and max(runs) <= max_run)


def test_proposals_are_feasible_distinct_items_and_start_with_the_greedy():
  rng = np.random.default_rng(0)
  lists, n, k, c = 20, 15, 6, 4
  scores = rng.normal(size=(lists, n)).astype(np.float32)
  categories = rng.integers(0, c, size=(lists, n))
  where = np.ones((lists, n), bool)
  where[3, 10:] = False
  beams = np.tile(np.arange(k), (lists, 2, 1))
  proposals = np.asarray(ge.propose(scores, categories, where, k, key=jax.random.PRNGKey(1),
                                    num_perturbations=5, noise=1.0, num_categories=c,
                                    max_count=2, max_run=1, beams=beams))
  assert proposals.shape == (lists, 1 + 5 + 2, k)
  greedy = rerank.constrained(scores, categories, k, max_count=2, max_run=1, num_categories=c,
                              where=where, best_effort=True)
  np.testing.assert_array_equal(proposals[:, 0], np.asarray(greedy.indices))
  np.testing.assert_array_equal(proposals[:, 6:], beams)
  for b in range(lists):
    if not bool(greedy.feasible[b]):
      continue
    for row in proposals[b, :6]:
      assert (row >= 0).all() and len(set(row)) == k and where[b, row].all()
      assert _satisfies(categories[b, row], np.full(c, 2), 1)
  # The perturbations actually propose different lists.
  assert np.mean([len({tuple(r) for r in proposals[b, :6]}) for b in range(lists)]) > 2


def test_list_evaluator_is_order_aware_and_ignores_empty_slots():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(2, 8, 5)).astype(np.float32)
  score = rng.normal(size=(2, 8)).astype(np.float32)
  user = rng.normal(size=(2, 3)).astype(np.float32)
  lists = np.array([[[0, 1, 2, -1], [2, 1, 0, -1], [0, 1, 2, 3]]] * 2)
  model = ListEvaluator(list_length=4, hidden=16, num_heads=2)
  params = model.init(jax.random.PRNGKey(0), features, score, user, lists)
  value = np.asarray(model.apply(params, features, score, user, lists))
  assert value.shape == (2, 3) and np.isfinite(value).all()
  assert abs(value[0, 0] - value[0, 1]) > 1e-4          # same items, other order
  # What an empty slot's index points at does not matter.
  other = lists.copy()
  other[:, :2, 3] = -5
  np.testing.assert_allclose(np.asarray(model.apply(params, features, score, user, other)),
                             value, rtol=1e-6)
  # pick returns the proposal of largest value.
  chosen = np.asarray(ge.pick(model, params, {"features": features, "initial_score": score,
                                              "user": user}, lists))
  np.testing.assert_array_equal(chosen, lists[np.arange(2), np.argmax(value, 1)])


@pytest.mark.slow
def test_trained_evaluator_ranks_held_out_proposals_by_true_utility():
  sim = make_request_lists(SimulatorConfig(num_list_requests=500, num_requests=1000,
                                           list_candidates=20, num_items=2000))
  x = learned.model_inputs(sim.inputs, num_categories=20, num_business=4)
  proposals = np.asarray(ge.propose(x["initial_score"], x["categories"], x["where"], 5,
                                    key=jax.random.PRNGKey(0), num_perturbations=15, noise=1.5,
                                    num_categories=20, max_count=3))
  relevance = np.broadcast_to(sim.truth["relevance"][:, None], proposals.shape[:2] + (20,))
  categories = np.broadcast_to(sim.inputs["category"][:, None], relevance.shape)
  utility = np.asarray(list_utility(proposals, relevance, categories,
                                    position_bias=sim.truth["position_bias"],
                                    repeat_decay=sim.truth["repeat_decay"]))
  train = {name: value[:400] for name, value in x.items()}
  test = {name: value[400:] for name, value in x.items()}
  config = ge.EvaluatorConfig(num_steps=200, batch_size=32, hidden=32)
  model, params, history = ge.train_evaluator(config, train, proposals[:400], utility[:400],
                                              key=jax.random.PRNGKey(1), log=lambda _: None)
  assert history[-1]["mse"] < history[0]["mse"]
  chosen = np.asarray(ge.pick(model, params, test, proposals[400:]))
  picked = np.asarray(list_utility(chosen, sim.truth["relevance"][400:],
                                   sim.inputs["category"][400:],
                                   position_bias=sim.truth["position_bias"],
                                   repeat_decay=sim.truth["repeat_decay"]))
  # Held out: the predicted values order each request's proposals like the truth
  # does, and the pick beats a proposal drawn at random (the mean).
  value = np.asarray(model.apply(params, test["features"], test["initial_score"], test["user"],
                                 proposals[400:]))
  centred = lambda a: (a - a.mean(1, keepdims=True)).ravel()  # noqa: E731
  assert np.corrcoef(centred(value), centred(utility[400:]))[0, 1] > 0.2
  assert picked.mean() > utility[400:].mean() + 0.05
