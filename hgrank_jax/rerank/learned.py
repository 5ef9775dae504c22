"""Training and inference for the learned rerankers (PRM, Seq2Slate).

Both models are trained end to end through a relaxed list: a soft top-k
pointer matrix ``P [B, k, n]`` (row t a distribution over the candidates at
position t). For PRM it is the first k rows of ``ops.soft_permutation`` of the
model's scores (method ``softsort``, ``neuralsort`` or ``ot``); Seq2Slate's
decoder emits it directly. The loss is

  -soft NDCG@k(P, relevance) + lam * quota_penalty(E),  E_c = sum_t,i P_ti [cat_i = c],

the soft category exposure of the relaxed top k against per-category min/max
counts. ``lam`` is fixed or raised by dual ascent on the quota violation of
the hard lists on validation requests. The true relevance enters only the
loss; the model inputs are built by :func:`model_inputs` from
``RequestLists.inputs`` alone.

:func:`train_reinforce` fine-tunes a Seq2Slate by policy gradient (REINFORCE,
as in its paper): it samples lists from the constraint-masked policy, rewards
each with the simulator's true list utility (diminishing returns for repeated
categories included) and subtracts a leave-one-out baseline, the mean reward
of the other samples of the same request. The utility is a reward only, never
a model input.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hgrank_jax.data import list_utility
from hgrank_jax.losses import quota_penalty
from hgrank_jax.metrics import lists as list_metrics
from hgrank_jax.models.rerankers import PRM, Seq2Slate
from hgrank_jax.ops import soft_permutation
from hgrank_jax.rerank.constrained import constrained


def model_inputs(inputs, *, num_categories, num_business):
  """Model inputs from ``RequestLists.inputs`` (no truth is read).

  Args:
    inputs: dict of numpy arrays (see ``RequestLists``).
    num_categories, num_business: static vocabulary sizes.

  Returns:
    dict with features float32 ``[R, n, d + C + num_business + 1]``,
    initial_score float32 ``[R, n]`` (standardised within each list), user
    float32 ``[R, C]`` (the user's history category distribution), or
    ``[R, C + d_u]`` when ``inputs`` carries a Layer 1 ``user_embedding``
    ``[R, d_u]`` (``rerank.layer1_scores``), where bool ``[R, n]`` and
    categories int32 ``[R, n]``.
  """
  where = np.asarray(inputs["where"], bool)
  score = np.asarray(inputs["initial_score"], np.float32)
  count = np.maximum(where.sum(-1, keepdims=True), 1)
  mean = np.where(where, score, 0).sum(-1, keepdims=True) / count
  std = np.sqrt(np.where(where, (score - mean) ** 2, 0).sum(-1, keepdims=True) / count) + 1e-6
  features = np.concatenate([
      np.asarray(inputs["item_embedding"], np.float32),
      np.eye(num_categories, dtype=np.float32)[inputs["category"]],
      np.eye(num_business, dtype=np.float32)[inputs["business"]],
      np.log1p(np.asarray(inputs["item_value"], np.float32))[..., None],
  ], axis=-1) * where[..., None]
  history = np.asarray(inputs["history_category_counts"], np.float32)
  user = history / np.maximum(history.sum(-1, keepdims=True), 1.0)
  if "user_embedding" in inputs:
    user = np.concatenate([user, np.asarray(inputs["user_embedding"], np.float32)], axis=-1)
  return {"features": features, "initial_score": np.where(where, (score - mean) / std, 0.0),
          "user": user, "where": where, "categories": np.asarray(inputs["category"], np.int32)}


def soft_list_loss(pointer, relevance, categories, where, *, num_categories, min_count=None,
                   max_count=None, quota_weight=0.0):
  """``-soft NDCG@k + quota_weight * quota_penalty`` of a soft pointer matrix.

  Args:
    pointer: float ``[B, k, n]``.
    relevance: float ``[B, n]`` graded labels (true click probabilities).
    categories: int ``[B, n]``; where: bool ``[B, n]``.
    num_categories: static int C.
    min_count, max_count: optional per-category bounds for the top k.
    quota_weight: float (may be traced) lambda.

  Returns:
    (scalar loss, dict of scalar diagnostics).
  """
  k = pointer.shape[-2]
  # A relaxed decoder can spend more than one unit of mass on a strong item
  # across positions; capping each item's total at 1 removes that free gain.
  pointer = pointer / jnp.maximum(1.0, jnp.sum(pointer, axis=-2, keepdims=True))
  discount = 1.0 / jnp.log2(2.0 + jnp.arange(k))
  gains = jnp.where(where, 2.0 ** relevance - 1.0, 0.0)
  dcg = jnp.einsum("btn,bn,t->b", pointer, gains, discount)
  ideal = jnp.sum(jax.lax.top_k(gains, k)[0] * discount, -1)
  ndcg = jnp.where(ideal > 0, dcg / jnp.maximum(ideal, 1e-9), 0.0)
  membership = jax.nn.one_hot(categories, num_categories) * where[..., None]
  exposure = jnp.einsum("btn,bnc->bc", pointer, membership)
  penalty = quota_penalty(exposure, min_count=min_count, max_count=max_count)
  loss = -jnp.mean(ndcg) + quota_weight * penalty
  return loss, {"soft_ndcg": jnp.mean(ndcg), "quota_penalty": penalty}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of :func:`train_reranker` (see configs/rerank.py)."""
  model: str = "prm"                 # "prm" or "seq2slate"
  list_length: int = 10
  hidden: int = 64
  num_heads: int = 4
  num_layers: int = 2
  sort_method: str = "softsort"      # PRM's relaxation: softsort, neuralsort, ot
  temperature: float = 0.1
  learning_rate: float = 1e-3
  batch_size: int = 64
  num_steps: int = 300
  quota_weight: float = 0.0          # initial lambda
  dual_step: float = 0.0             # > 0: dual ascent on validation violation
  dual_every: int = 50
  max_count: Optional[int] = None
  min_count: Optional[int] = None
  max_run: Optional[int] = None      # used by constrained decoding only
  beam_width: int = 1                # Seq2Slate decoding: 1 greedy, > 1 beam search
  reinforce_steps: int = 0           # Seq2Slate: policy-gradient steps after the soft loss
  reinforce_samples: int = 8         # sampled lists per request and step
  reinforce_learning_rate: float = 3e-4


def build_model(config: TrainConfig, max_len: int):
  common = dict(hidden=config.hidden, num_heads=config.num_heads, num_layers=config.num_layers,
                max_len=max_len)
  if config.model == "prm":
    return PRM(**common)
  if config.model == "seq2slate":
    return Seq2Slate(list_length=config.list_length, **common)
  raise ValueError(f"unknown reranker model {config.model!r}")


def _pointer(model, config, params, batch):
  args = (batch["features"], batch["initial_score"], batch["user"], batch["where"])
  if config.model == "prm":
    scores = model.apply(params, *args)
    permutation = soft_permutation(scores, method=config.sort_method,
                                   temperature=config.temperature, where=batch["where"])
    return permutation[..., :config.list_length, :]
  return model.apply(params, *args, temperature=1.0)


def _constraint_kwargs(config, batch, num_categories):
  return dict(categories=batch["categories"], num_categories=num_categories,
              min_count=config.min_count, max_count=config.max_count, max_run=config.max_run)


def predict(model, config: TrainConfig, params, batch, *, num_categories, constrain=False):
  """Hard final lists int32 ``[B, k]`` (``-1`` for unfilled slots).

  PRM takes the top k of its scores, or with ``constrain`` the constrained
  greedy's list on its scores; Seq2Slate decodes greedily (``beam_width`` 1)
  or by beam search, with ``constrain`` restricting every position to the
  constrained greedy's feasible picks (min/max counts and run length), so no
  list breaks them when a feasible list exists.
  """
  args = (batch["features"], batch["initial_score"], batch["user"], batch["where"])
  if config.model == "prm":
    scores = model.apply(params, *args)
    if constrain:
      return constrained(scores, batch["categories"], config.list_length,
                         min_count=config.min_count, max_count=config.max_count,
                         max_run=config.max_run, num_categories=num_categories,
                         where=batch["where"]).indices
    scores = jnp.where(batch["where"], scores, -jnp.inf)
    top_scores, top = jax.lax.top_k(scores, config.list_length)
    return jnp.where(jnp.isfinite(top_scores), top, -1).astype(jnp.int32)
  kwargs = _constraint_kwargs(config, batch, num_categories) if constrain else {}
  return model.apply(params, *args, beam_width=config.beam_width, method=Seq2Slate.decode,
                     **kwargs)


def train_reinforce(model, params, config: TrainConfig, train_inputs, train_relevance, *,
                    position_bias, repeat_decay, key, num_categories, constrain=True,
                    log=print):
  """REINFORCE with a leave-one-out baseline on the true list utility (Seq2Slate).

  Every step draws ``config.batch_size`` requests, samples
  ``config.reinforce_samples`` lists per request from the masked policy
  (:meth:`Seq2Slate.sample`, with the quota masks when ``constrain``), rewards
  each with :func:`hgrank_jax.data.list_utility` under the simulator's truth
  and ascends ``mean((R - b) grad log pi(list))``, ``b`` the mean reward of
  the request's other samples.

  Args:
    model, params: a :class:`Seq2Slate` and its parameters (e.g. from
      :func:`train_reranker`, or a fresh ``model.init``).
    config: :class:`TrainConfig`; uses ``reinforce_steps``,
      ``reinforce_samples``, ``reinforce_learning_rate``, ``batch_size`` and
      the quota fields.
    train_inputs: dict from :func:`model_inputs` (numpy).
    train_relevance: float ``[R, n]`` true click probabilities (reward only).
    position_bias: float ``[>= k]``; repeat_decay: float, the simulator's truth.
    key: jax PRNG key (batches and samples).
    num_categories: static int C.
    constrain: sample under the quota masks.
    log: callable for progress lines.

  Returns:
    ``(params, history)``, history the mean sampled reward every 10% of steps.
  """
  if config.model != "seq2slate":
    raise ValueError("REINFORCE trains a Seq2Slate")
  optimizer = optax.adam(config.reinforce_learning_rate)
  opt_state = optimizer.init(params)
  samples = config.reinforce_samples
  if samples < 2:
    raise ValueError("the leave-one-out baseline needs reinforce_samples >= 2")
  position_bias = jnp.asarray(position_bias, jnp.float32)

  @jax.jit
  def step(params, opt_state, batch, relevance, step_key):
    tiled = {name: jnp.concatenate([value] * samples, 0) for name, value in batch.items()}
    args = (tiled["features"], tiled["initial_score"], tiled["user"], tiled["where"])
    kwargs = _constraint_kwargs(config, tiled, num_categories) if constrain else {}

    def loss_fn(p):
      lists, log_prob = model.apply(p, *args, key=step_key, method=Seq2Slate.sample, **kwargs)
      reward = list_utility(lists, jnp.concatenate([relevance] * samples, 0),
                            tiled["categories"], position_bias=position_bias,
                            repeat_decay=repeat_decay).reshape(samples, -1)
      baseline = (reward.sum(0, keepdims=True) - reward) / (samples - 1)
      advantage = jax.lax.stop_gradient(reward - baseline).reshape(-1)
      return -jnp.mean(advantage * log_prob), jnp.mean(reward)

    (_, reward), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, reward

  num_train = len(train_relevance)
  history, rewards = [], []
  every = max(1, config.reinforce_steps // 10)
  for index in range(config.reinforce_steps):
    key, rows_key, sample_key = jax.random.split(key, 3)
    rows = np.asarray(jax.random.choice(rows_key, num_train, (min(config.batch_size, num_train),),
                                        replace=False))
    batch = {name: value[rows] for name, value in train_inputs.items()}
    params, opt_state, reward = step(params, opt_state, batch, train_relevance[rows], sample_key)
    rewards.append(float(reward))
    if (index + 1) % every == 0 or index + 1 == config.reinforce_steps:
      history.append({"step": index + 1, "reward": float(np.mean(rewards))})
      log(f"reinforce step {index + 1}: mean sampled utility {history[-1]['reward']:.4f}")
      rewards = []
  return params, history


def train_reranker(config: TrainConfig, train_inputs, train_relevance, valid_inputs, *, key,
                   num_categories, log=print):
  """Trains a PRM or Seq2Slate with Adam; returns ``(model, params, history)``.

  Args:
    config: :class:`TrainConfig`.
    train_inputs, valid_inputs: dicts from :func:`model_inputs` (numpy).
    train_relevance: float ``[R, n]`` true click probabilities, the loss labels.
    key: jax PRNG key (initialisation and batch order).
    num_categories: static int C.
    log: callable for progress lines.

  Returns:
    The flax module, trained params and a list of per-interval diagnostics.
  """
  n = train_inputs["where"].shape[-1]
  model = build_model(config, max_len=n)
  init_key, order_key = jax.random.split(key)
  sample = {name: value[:2] for name, value in train_inputs.items()}
  params = model.init(init_key, sample["features"], sample["initial_score"], sample["user"],
                      sample["where"])
  optimizer = optax.adam(config.learning_rate)
  opt_state = optimizer.init(params)
  bounds = dict(min_count=config.min_count, max_count=config.max_count)

  @jax.jit
  def step(params, opt_state, batch, relevance, quota_weight):
    def loss_fn(p):
      pointer = _pointer(model, config, p, batch)
      return soft_list_loss(pointer, relevance, batch["categories"], batch["where"],
                            num_categories=num_categories, quota_weight=quota_weight, **bounds)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  @jax.jit
  def validation_violation(params):
    greedy = dataclasses.replace(config, beam_width=1)
    lists = predict(model, greedy, params, valid_inputs, num_categories=num_categories)
    return jnp.mean(list_metrics.quota_violation(lists, valid_inputs["categories"],
                                                 num_categories, **bounds))

  num_train = len(train_relevance)
  quota_weight = float(config.quota_weight)
  history = []
  order = np.asarray(jax.random.permutation(order_key, num_train))
  cursor = 0
  for index in range(config.num_steps):
    if cursor + config.batch_size > num_train:
      order_key, subkey = jax.random.split(order_key)
      order, cursor = np.asarray(jax.random.permutation(subkey, num_train)), 0
    rows = order[cursor:cursor + config.batch_size]
    cursor += config.batch_size
    batch = {name: value[rows] for name, value in train_inputs.items()}
    params, opt_state, loss, aux = step(params, opt_state, batch, train_relevance[rows],
                                        jnp.float32(quota_weight))
    if (index + 1) % config.dual_every == 0 or index + 1 == config.num_steps:
      violation = float(validation_violation(params))
      if config.dual_step > 0:
        quota_weight = max(0.0, quota_weight + config.dual_step * violation)
      entry = {"step": index + 1, "loss": float(loss), "soft_ndcg": float(aux["soft_ndcg"]),
               "valid_violation": violation, "quota_weight": quota_weight}
      history.append(entry)
      log(f"{config.model} step {index + 1}: loss {entry['loss']:.4f} soft NDCG "
          f"{entry['soft_ndcg']:.4f} valid violation {violation:.3f} lambda {quota_weight:.3f}")
  return model, params, history

