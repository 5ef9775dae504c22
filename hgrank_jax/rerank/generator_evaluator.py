"""Generator-evaluator reranking: feasible candidate lists, a learned list value picks.

A generator proposes M whole final lists per request and an evaluator network
scores each list as a whole, ``V(pi)``, order and repeats included; the
reranker returns the list with the largest ``V``.

* Generator (:func:`propose`): the constrained greedy on a score vector (the
  PRM's) and on ``num_perturbations`` Gumbel-perturbed copies of it (noise
  scaled by each list's score spread), optionally joined by the beams of a
  constrained Seq2Slate beam search. Every proposal is built under the quota
  masks, so every candidate is feasible whenever a feasible list exists.
* Evaluator (:class:`hgrank_jax.models.rerankers.ListEvaluator`, trained by
  :func:`train_evaluator`): a small transformer over the chosen items with
  position embeddings, regressing the simulator's true list utility of the
  generator's proposals on training requests. The utility is the regression
  target only; the evaluator reads the same model inputs as the rerankers.
* :func:`pick`: the proposal of largest predicted value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hgrank_jax.models.rerankers import ListEvaluator
from hgrank_jax.rerank.constrained import constrained


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """Settings of :func:`train_evaluator` and :func:`propose` (see configs/rerank.py)."""
  hidden: int = 32
  num_heads: int = 4
  num_layers: int = 1
  learning_rate: float = 1e-3
  batch_size: int = 32               # requests per step (all their proposals)
  num_steps: int = 300
  num_perturbations: int = 8
  noise: float = 0.5                 # Gumbel scale, times the list's score std
  train_noise: tuple = (0.25, 1.0)   # extra noise levels for the training proposals


def propose(scores, categories, where, k, *, key, num_perturbations, noise, num_categories,
            min_count=None, max_count=None, max_run=None, beams=None):
  """Feasible candidate lists ``int32 [B, M, k]`` for every request.

  Args:
    scores: float ``[B, n]`` (e.g. PRM scores); padded candidates are ignored.
    categories: int ``[B, n]``; where: bool ``[B, n]``.
    k: static list length.
    key: jax PRNG key of the perturbations.
    num_perturbations: static int P of perturbed copies.
    noise: float Gumbel scale relative to each list's score standard deviation.
    num_categories, min_count, max_count, max_run: the quota, as for
      :func:`hgrank_jax.rerank.constrained.constrained`.
    beams: optional int ``[B, W, k]`` extra proposals (Seq2Slate beams).

  Returns:
    int32 ``[B, M, k]`` with ``M = 1 + P (+ W)``; the first is the greedy on
    the unperturbed scores.
  """
  scores = jnp.asarray(scores, jnp.float32)
  valid = jnp.asarray(where, bool)
  count = jnp.maximum(valid.sum(-1, keepdims=True), 1)
  mean = jnp.where(valid, scores, 0.0).sum(-1, keepdims=True) / count
  spread = jnp.sqrt(jnp.where(valid, (scores - mean) ** 2, 0.0).sum(-1, keepdims=True) / count)
  gumbel = jax.random.gumbel(key, (scores.shape[0], num_perturbations, scores.shape[-1]))
  perturbed = jnp.concatenate(
      [scores[:, None], scores[:, None] + noise * (spread[:, None] + 1e-6) * gumbel], axis=1)
  tile = lambda x: jnp.broadcast_to(x[:, None], perturbed.shape)  # noqa: E731
  lists = constrained(perturbed, tile(jnp.asarray(categories, jnp.int32)), k,
                      min_count=min_count, max_count=max_count, max_run=max_run,
                      num_categories=num_categories, where=tile(valid)).indices
  if beams is not None:
    lists = jnp.concatenate([lists, jnp.asarray(beams, jnp.int32)], axis=1)
  return lists


def build_evaluator(config: EvaluatorConfig, list_length: int):
  return ListEvaluator(list_length=list_length, hidden=config.hidden,
                       num_heads=config.num_heads, num_layers=config.num_layers)


def train_evaluator(config: EvaluatorConfig, inputs, lists, utilities, *, key, log=print):
  """Fits a :class:`ListEvaluator` to true list utilities by mean squared error.

  Args:
    config: :class:`EvaluatorConfig`.
    inputs: dict from :func:`hgrank_jax.rerank.learned.model_inputs` (numpy),
      R requests.
    lists: int ``[R, M, k]`` proposals for those requests.
    utilities: float ``[R, M]`` their true list utilities (targets only).
    key: jax PRNG key (initialisation and batch order).
    log: callable for progress lines.

  Returns:
    ``(module, params, history)``; history holds the training MSE and the
    rate at which the predicted best proposal is the truly best one.
  """
  lists = np.asarray(lists, np.int32)
  utilities = np.asarray(utilities, np.float32)
  model = build_evaluator(config, lists.shape[-1])
  init_key, order_key = jax.random.split(key)
  params = model.init(init_key, inputs["features"][:2], inputs["initial_score"][:2],
                      inputs["user"][:2], lists[:2])
  optimizer = optax.adam(config.learning_rate)
  opt_state = optimizer.init(params)
  # Only differences within a request matter for the pick, so predictions and
  # targets are both centred per request before the squared error.
  offset = utilities.mean(1, keepdims=True)

  @jax.jit
  def step(params, opt_state, features, score, user, batch_lists, target, batch_offset):
    def loss_fn(p):
      value = model.apply(p, features, score, user, batch_lists)
      value = value - value.mean(-1, keepdims=True)
      return jnp.mean((value - (target - batch_offset)) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  num = len(lists)
  history, losses = [], []
  every = max(1, config.num_steps // 5)
  for index in range(config.num_steps):
    order_key, subkey = jax.random.split(order_key)
    rows = np.asarray(jax.random.choice(subkey, num, (min(config.batch_size, num),),
                                        replace=False))
    params, opt_state, loss = step(params, opt_state, inputs["features"][rows],
                                   inputs["initial_score"][rows], inputs["user"][rows],
                                   lists[rows], utilities[rows], offset[rows])
    losses.append(float(loss))
    if (index + 1) % every == 0 or index + 1 == config.num_steps:
      history.append({"step": index + 1, "mse": float(np.mean(losses))})
      log(f"evaluator step {index + 1}: mse {history[-1]['mse']:.5f}")
      losses = []
  return model, params, history


def pick(model, params, inputs, lists):
  """The proposal of largest predicted value: int32 ``[B, k]``.

  Args:
    model, params: a trained :class:`ListEvaluator`.
    inputs: dict with features, initial_score and user of B requests.
    lists: int ``[B, M, k]`` proposals.
  """
  value = model.apply(params, inputs["features"], inputs["initial_score"], inputs["user"], lists)
  best = jnp.argmax(value, axis=-1)
  return jnp.take_along_axis(lists, best[:, None, None], axis=1)[:, 0]
