"""Reranking requests with known list-level utility.

Each request holds ``list_candidates`` distinct candidates for one user, sorted
by the scores of an imperfect initial ranker (true click logit, plus a
popularity bias, plus Gaussian noise), so candidate slot j is the initial
ranker's rank j. Model inputs (ids, categories, business lines, embeddings,
values, initial scores, the user's observed category history and a validity
mask) are kept apart from the truth (relevance, long-view probability, the
user's trie code and interest distribution), so a reranker can be handed
``lists.inputs`` alone.

The true value of a final list ``o = (o_0, ..., o_{k-1})`` of candidate slots is

  U(o) = sum_k theta_k * r_{o_k} * w_{o_k} * gamma ** m_k,

where theta_k is the position bias, r the relevance (click probability once
examined), w an item weight (1 for expected clicks, the per-click value for
expected value), gamma = ``repeat_decay`` and m_k the number of earlier items
in the list with the same category. Writing ``gamma ** m_k = 1 + (gamma ** m_k
- 1)`` splits U into the additive per-item sum and a non-positive interaction
term that grows with repeated categories: a diminishing-returns form of the
pairwise interaction g(i_k, i_l, u) of seed 001.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.data.sim.logs import chunk_request_range, iter_chunks, retrieve_candidates
from hgrank_jax.data.sim.config import SimulatorConfig
from hgrank_jax.data.sim.world import LIST_STREAM, SimWorld, true_scores


# Compiled as a whole: eager op-by-op dispatch would compile each of its ~15 ops
# separately for every new shape, which costs seconds on a CPU.
@jax.jit
def list_utility(order, relevance, categories, *, position_bias, repeat_decay, item_weight=None):
  """True utility of final lists: ``sum_k theta_k r_{o_k} w_{o_k} gamma^{m_k}``.

  ``m_k`` counts earlier valid slots of the list whose category equals that of
  slot k. Entries of ``order`` below 0 are empty slots: they add nothing and do
  not count as earlier items. jit- and vmap-safe and differentiable in
  ``relevance`` and ``item_weight``.

  Args:
    order: int ``[..., k]``, candidate indices into the last axis of
      ``relevance`` (``-1`` for an empty slot); position 0 is the top.
    relevance: float ``[..., n]``, click probability once examined.
    categories: int ``[..., n]``, candidate categories.
    position_bias: float ``[>= k]``, examination probability per position.
    repeat_decay: gamma in (0, 1]; 1 makes the utility additive.
    item_weight: optional float ``[..., n]`` (e.g. per-click value); None means 1.

  Returns:
    float32 ``[...]``.

  The second item repeats the first one's category, so its term is halved:
  1 * 0.5 + 0.5 * 0.4 * 0.5 + 0.25 * 0.2 = 0.65.

  >>> u = list_utility(jnp.array([0, 1, 2]), jnp.array([0.5, 0.4, 0.2]), jnp.array([3, 3, 7]),
  ...                  position_bias=jnp.array([1.0, 0.5, 0.25]), repeat_decay=0.5)
  >>> round(float(u), 6)
  0.65
  """
  order = jnp.asarray(order)
  relevance = jnp.asarray(relevance, jnp.float32)
  categories = jnp.asarray(categories)
  k = order.shape[-1]
  valid = order >= 0
  slot = jnp.where(valid, order, 0)
  value = jnp.take_along_axis(relevance, slot, axis=-1)
  if item_weight is not None:
    value = value * jnp.take_along_axis(jnp.asarray(item_weight, jnp.float32), slot, axis=-1)
  category = jnp.take_along_axis(categories, slot, axis=-1)
  earlier = jnp.tril(jnp.ones((k, k), bool), -1)  # earlier[k, j]: j comes before k
  same = (category[..., :, None] == category[..., None, :]) & valid[..., None, :] & earlier
  repeats = same.sum(axis=-1)
  theta = jnp.asarray(position_bias, jnp.float32)[:k]
  contribution = theta * value * jnp.asarray(repeat_decay, jnp.float32) ** repeats
  return jnp.sum(jnp.where(valid, contribution, 0.0), axis=-1)


@dataclasses.dataclass(frozen=True)
class RequestLists:
  """Reranking requests: model inputs and ground truth, kept apart.

  With R requests, n candidates, d embedding width, C categories, L trie levels:

  Attributes:
    inputs: what a reranker may read.
      request_id int64 ``[R]``; user_id int32 ``[R]``;
      history_category_counts int32 ``[R, C]`` (the user's observed past clicks
      per category); item_id, category, business int32 ``[R, n]``;
      item_embedding float32 ``[R, n, d]``; item_value float32 ``[R, n]``
      (per-click value, known to the platform, e.g. an ad's bid);
      initial_score float32 ``[R, n]`` (descending along n); where bool
      ``[R, n]`` (valid candidates form a prefix; padded slots hold zeros).
    truth: what only evaluation may read.
      relevance float32 ``[R, n]`` (0 on padding); long_view_given_click
      float32 ``[R, n]``; user_cluster int32 ``[R, L]``; user_interest float32
      ``[R, C]``; position_bias float32 ``[n]``; repeat_decay float32 scalar.
  """

  inputs: dict[str, np.ndarray]
  truth: dict[str, np.ndarray]

  @property
  def num_requests(self) -> int:
    return len(self.inputs["user_id"])

  def true_utility(self, order, *, weight: str = "clicks"):
    """:func:`list_utility` of final lists ``order [R, k]`` under this truth.

    Args:
      order: int ``[R, k]`` candidate slots, ``-1`` for empty.
      weight: "clicks" (expected clicks, w = 1) or "value" (expected value,
        w = item_value).

    Returns:
      float32 ``[R]``.
    """
    if weight not in ("clicks", "value"):
      raise ValueError(f"weight must be 'clicks' or 'value', got {weight!r}")
    order = np.asarray(order)
    num_positions = len(self.truth["position_bias"])
    if order.shape[-1] > num_positions:
      raise ValueError(f"lists of length {order.shape[-1]} exceed the {num_positions} positions "
                       "with a defined position bias")
    return np.asarray(list_utility(
        order, self.truth["relevance"], self.inputs["category"],
        position_bias=self.truth["position_bias"], repeat_decay=self.truth["repeat_decay"],
        item_weight=self.inputs["item_value"] if weight == "value" else None))


def list_chunk(world: SimWorld, index: int) -> RequestLists:
  """Generates chunk ``index`` of the reranking requests (deterministic in seed and index)."""
  cfg = world.config
  first, stop = chunk_request_range(index, cfg.num_list_requests, cfg.chunk_requests)
  num_requests, n = stop - first, cfg.list_candidates
  rng = np.random.default_rng([cfg.seed, LIST_STREAM, index])
  users = world.sample_users(rng, num_requests)
  candidates = retrieve_candidates(world, rng, users, n)
  truth = true_scores(world, users[:, None], candidates)
  # The initial ranker sees the truth through noise and a popularity bias.
  score = (truth["logit"] + cfg.ranker_popularity_weight * world.item_log_popularity[candidates]
           + cfg.ranker_noise * rng.standard_normal(candidates.shape)).astype(np.float32)
  ranking = np.argsort(-score, axis=1, kind="stable")
  candidates = np.take_along_axis(candidates, ranking, axis=1)
  score = np.take_along_axis(score, ranking, axis=1)
  relevance = np.take_along_axis(truth["relevance"], ranking, axis=1)
  long_view = np.take_along_axis(truth["long_view_given_click"], ranking, axis=1)

  if cfg.list_min_candidates is None:
    where = np.ones((num_requests, n), bool)
  else:
    num_valid = rng.integers(cfg.list_min_candidates, n + 1, size=num_requests)
    where = np.arange(n)[None, :] < num_valid[:, None]

  def masked(x):
    return np.where(where.reshape(where.shape + (1,) * (x.ndim - 2)), x, np.zeros((), x.dtype))

  inputs = {
      "request_id": np.arange(first, stop, dtype=np.int64),
      "user_id": users,
      "history_category_counts": world.user_history_counts[users],
      "item_id": masked(candidates),
      "category": masked(world.item_category[candidates]),
      "business": masked(world.item_business[candidates]),
      "item_embedding": masked(world.item_embedding[candidates]),
      "item_value": masked(world.item_value[candidates]),
      "initial_score": masked(score),
      "where": where,
  }
  truth = {
      "relevance": masked(relevance),
      "long_view_given_click": masked(long_view),
      "user_cluster": world.user_cluster[users],
      "user_interest": world.user_interest[users].astype(np.float32),
      "position_bias": cfg.position_bias(n).astype(np.float32),
      "repeat_decay": np.float32(cfg.repeat_decay),
  }
  return RequestLists(inputs=inputs, truth=truth)


def iter_list_chunks(world: SimWorld | SimulatorConfig, *, start: int = 0, stop: int | None = None,
                     step: int = 1) -> Iterator[RequestLists]:
  """Lazily yields reranking-request chunks ``range(start, stop, step)`` (default: all).

  ``world`` may be a config, in which case the world is built first.
  """
  return iter_chunks(world, "num_list_requests", list_chunk, start=start, stop=stop, step=step)


def concat_lists(chunks) -> RequestLists:
  """Concatenates reranking-request chunks along the request axis."""
  chunks = list(chunks)
  if not chunks:
    raise ValueError("no chunks to concatenate")
  # position_bias and repeat_decay describe the world, not a request: keep one copy.
  shared = ("position_bias", "repeat_decay")
  truth = {key: value if key in shared else np.concatenate([c.truth[key] for c in chunks])
           for key, value in chunks[0].truth.items()}
  return RequestLists(
      inputs={key: np.concatenate([c.inputs[key] for c in chunks]) for key in chunks[0].inputs},
      truth=truth)
