"""Greedy diversity rerankers: MMR, DPP MAP, calibration and category coverage.

Each function picks a final list of ``k`` candidates one position at a time,
the position-t pick maximising a marginal gain given the picks so far. They
take candidate arrays ``[..., n, ...]`` with any leading batch axes, respect an
optional validity mask ``where [..., n]``, run under ``jax.jit`` (``k`` is
static) and return int32 candidate indices ``[..., k]`` in list order; slots
that cannot be filled (fewer valid candidates than ``k``, or a DPP kernel that
became singular) hold ``-1``.

* :func:`mmr` -- maximal marginal relevance (Carbonell & Goldstein, 1998).
* :func:`dpp_greedy` -- fast greedy MAP inference for a DPP with kernel
  ``L = diag(q) S diag(q)`` by incremental Cholesky (Chen et al., 2018),
  O(k^2 n + k n d) per list.
* :func:`calibrated` -- Steck's calibrated recommendation (2018): relevance
  traded against KL(target || list category distribution).
* :func:`coverage` -- greedy maximisation of a weighted probabilistic category
  coverage, a monotone submodular function, so greedy is within 1 - 1/e.
"""

import functools

import jax
import jax.numpy as jnp

from hgrank_jax.ops.list_batch import CHUNK_SIZE, valid_mask, vmap_lists

_NEG_INF = -jnp.inf


def _check_k(k, n):
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  if k > n:
    raise ValueError(f"k={k} exceeds the {n} candidates per list")


def finite_floor(gain):
  """Maps NaN and -inf gains to the lowest finite float, so argmax over a
  ``where(available, gain, -inf)`` mask can never land on an unavailable item."""
  gain = jnp.where(jnp.isnan(gain), -jnp.inf, gain)
  return jnp.maximum(gain, jnp.finfo(gain.dtype).min)


def _greedy(gain_fn, init_state, update_fn, valid, k):
  """Runs a k-step greedy pick; shared loop of every reranker here.

  Args:
    gain_fn: ``(state, step) -> float [n]`` marginal gain of each candidate.
    init_state: pytree carried between steps.
    update_fn: ``(state, picked index, step) -> state`` after a pick.
    valid: bool ``[n]``.
    k: static list length.

  Returns:
    int32 ``[k]`` picks, ``-1`` once no valid candidate is left.
  """

  def step(carry, t):
    available, state = carry
    gain = jnp.where(available, finite_floor(gain_fn(state, t)), _NEG_INF)
    pick = jnp.argmax(gain)
    # Only "nothing left" yields -1; items with a NaN or -inf gain come last.
    has_pick = jnp.any(available)
    new_state = update_fn(state, pick, t)
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(has_pick, new, old), new_state, state)
    available = available.at[pick].set(jnp.where(has_pick, False, available[pick]))
    return (available, state), jnp.where(has_pick, pick, -1).astype(jnp.int32)

  _, picks = jax.lax.scan(step, (valid, init_state), jnp.arange(k))
  return picks


def _unit_rows(embeddings):
  norm = jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
  return embeddings / jnp.maximum(norm, 1e-12)


@functools.partial(jax.jit, static_argnames=("k",))
def mmr(relevance, embeddings, k, *, lam=0.5, where=None):
  """Maximal marginal relevance.

  Position t takes ``argmax_i lam * rel_i - (1 - lam) * max_{j picked} cos(e_i, e_j)``;
  the first pick (nothing picked yet) is the most relevant candidate.

  Args:
    relevance: float ``[..., n]``.
    embeddings: float ``[..., n, d]``; similarity is cosine.
    k: static int list length, ``1 <= k <= n``.
    lam: float in [0, 1]; 1 is the relevance order.
    where: optional bool ``[..., n]``.

  Returns:
    int32 ``[..., k]``.
  """
  relevance = jnp.asarray(relevance, jnp.float32)
  embeddings = jnp.asarray(embeddings, jnp.float32)
  batch, n = relevance.shape[:-1], relevance.shape[-1]
  _check_k(k, n)
  valid = valid_mask(where, relevance.shape)

  def one(rel, emb, ok):
    unit = _unit_rows(emb)

    def gain(max_sim, t):
      redundancy = jnp.where(t == 0, 0.0, max_sim)
      return lam * rel - (1.0 - lam) * redundancy

    def update(max_sim, pick, t):
      return jnp.maximum(max_sim, unit @ unit[pick])   # one similarity row, O(n d)

    return _greedy(gain, jnp.full((n,), _NEG_INF), update, ok, k)

  return vmap_lists(one, batch, relevance, embeddings, valid,
                    chunk_size=CHUNK_SIZE)


@functools.partial(jax.jit, static_argnames=("k",))
def dpp_greedy(quality, embeddings, k, *, jitter=1e-6, epsilon=1e-9, where=None):
  """Greedy MAP of a DPP by incremental Cholesky (Chen, Zhang & Zhou, 2018).

  The kernel is ``L_ij = q_i q_j cos(e_i, e_j) + jitter * [i == j]``: a Gram
  matrix, hence PSD; the jitter keeps it positive definite when the list is
  longer than the embedding rank. Position t takes the candidate maximising
  ``log det L_{S + i} - log det L_S = log d_i^2``, where ``d_i^2`` is the
  Schur complement kept up to date in O(n d) per step (the factor is kept
  as a k x d Gram-Schmidt basis of the picks' feature rows, so no step costs
  O(k n)). When the best ``d_i^2``
  drops to ``epsilon`` or below the kernel is singular on any larger set: the
  remaining slots hold ``-1`` (the algorithm's own stopping rule).

  Args:
    quality: float ``[..., n]``, positive item quality (e.g. ``exp(a * score)``).
    embeddings: float ``[..., n, d]``.
    k: static int, ``1 <= k <= n``.
    jitter: float >= 0 added to the diagonal.
    epsilon: float stopping threshold on the Schur complement.
    where: optional bool ``[..., n]``. Items whose quality or embedding is not
      finite are skipped as if masked.

  Returns:
    int32 ``[..., k]``.
  """
  quality = jnp.asarray(quality, jnp.float32)
  embeddings = jnp.asarray(embeddings, jnp.float32)
  batch, n = quality.shape[:-1], quality.shape[-1]
  _check_k(k, n)
  # A NaN or inf quality or embedding would poison every Schur complement of its
  # list; such items are skipped as if masked, and the rest of the list is kept.
  finite = jnp.isfinite(quality) & jnp.all(jnp.isfinite(embeddings), axis=-1)
  valid = valid_mask(where, quality.shape) & finite
  quality = jnp.where(finite, quality, 0.0)
  embeddings = jnp.where(finite[..., None], embeddings, 0.0)

  def one(q, emb, ok):
    # L = B B^T + jitter I with B = diag(q) U. Row t of the incremental
    # Cholesky factor is c_t(i) = <B_i, v_t> for every still-available i, v_t
    # the Gram-Schmidt residual of the new pick's B row against the earlier
    # picks' (the jitter only touches picked items, so it enters through the
    # Schur complement alone). Keeping the k x d basis instead of the k x n
    # factor makes a step one n x d matrix-vector product and no O(k n) work.
    factors = q[:, None] * _unit_rows(emb)

    def step(carry, t):
      available, basis, schur, stopped = carry
      gain = jnp.where(available, schur, _NEG_INF)
      pick = jnp.argmax(gain)
      take = jnp.any(available) & ~stopped & (schur[pick] > epsilon)
      picked = factors[pick]
      residual = picked - basis.T @ (basis @ picked)      # rows >= t of basis are zero
      direction = residual / jnp.sqrt(jnp.maximum(schur[pick], epsilon))
      direction = jnp.where(take, direction, 0.0)
      basis = basis.at[t].set(direction)
      row = factors @ direction
      schur = schur - row ** 2
      available = available.at[pick].set(jnp.where(take, False, available[pick]))
      return (available, basis, schur, stopped | ~take), jnp.where(take, pick, -1)

    diagonal = jnp.sum(factors * factors, -1) + jitter
    init = (ok, jnp.zeros((k, factors.shape[-1]), jnp.float32), diagonal, jnp.array(False))
    _, picks = jax.lax.scan(step, init, jnp.arange(k))
    return picks.astype(jnp.int32)

  return vmap_lists(one, batch, quality, embeddings, valid,
                    chunk_size=CHUNK_SIZE)


@functools.partial(jax.jit, static_argnames=("k",))
def calibrated(relevance, item_dist, target_dist, k, *, lam=0.5, alpha=0.01, where=None):
  """Steck's calibrated reranking (RecSys 2018), greedy.

  Maximises ``(1 - lam) * sum_{i in S} rel_i - lam * KL(p || q~_S)`` one pick at
  a time, where ``p`` is the target category distribution (the user's history),
  ``q_S`` the mean of the picked items' category distributions and
  ``q~_S = (1 - alpha) q_S + alpha p`` keeps the KL finite.

  Args:
    relevance: float ``[..., n]``.
    item_dist: float ``[..., n, C]``, each row a distribution over categories
      (one-hot for single-category items).
    target_dist: float ``[..., C]``, sums to 1.
    k: static int, ``1 <= k <= n``.
    lam: float in [0, 1], weight of calibration.
    alpha: float in (0, 1), smoothing toward ``p``.
    where: optional bool ``[..., n]``.

  Returns:
    int32 ``[..., k]``.
  """
  relevance = jnp.asarray(relevance, jnp.float32)
  item_dist = jnp.asarray(item_dist, jnp.float32)
  target_dist = jnp.asarray(target_dist, jnp.float32)
  batch, n = relevance.shape[:-1], relevance.shape[-1]
  _check_k(k, n)
  valid = valid_mask(where, relevance.shape)

  def one(rel, dist, target, ok):
    def gain(state, t):
      relevance_sum, dist_sum = state
      list_dist = (dist_sum[None, :] + dist) / (t + 1.0)
      smoothed = (1.0 - alpha) * list_dist + alpha * target[None, :]
      safe_target = jnp.where(target > 0, target, 1.0)
      kl = jnp.sum(jnp.where(target > 0, target * jnp.log(safe_target / smoothed), 0.0), -1)
      return (1.0 - lam) * (relevance_sum + rel) - lam * kl

    def update(state, pick, t):
      relevance_sum, dist_sum = state
      return relevance_sum + rel[pick], dist_sum + dist[pick]

    init = (jnp.zeros((), jnp.float32), jnp.zeros(dist.shape[-1:], jnp.float32))
    return _greedy(gain, init, update, ok, k)

  target_dist = jnp.broadcast_to(target_dist, batch + item_dist.shape[-1:])
  return vmap_lists(one, batch, relevance, item_dist, target_dist, valid,
                    chunk_size=CHUNK_SIZE)


@functools.partial(jax.jit, static_argnames=("k", "num_categories"))
def coverage(relevance, categories, k, *, weights=None, num_categories=None, where=None):
  """Greedy weighted probabilistic category coverage.

  ``f(S) = sum_c w_c * (1 - prod_{i in S, cat_i = c} (1 - r_i))``: category c
  counts as covered with the probability that at least one of its picked items
  is relevant, so a second item of a category adds less than the first
  (diminishing returns). Position t takes the largest marginal gain
  ``w_{c_i} r_i prod_{j picked, cat_j = c_i} (1 - r_j)``.

  Args:
    relevance: float ``[..., n]``, probabilities (clipped to [0, 1]).
    categories: int ``[..., n]`` in ``[0, C)``.
    k: static int, ``1 <= k <= n``.
    weights: optional float ``[..., C]`` category importance (e.g. the user's
      interest); None weighs every category 1 and then needs ``num_categories``.
    num_categories: static int C when ``weights`` is None.
    where: optional bool ``[..., n]``.

  Returns:
    int32 ``[..., k]``.
  """
  relevance = jnp.clip(jnp.asarray(relevance, jnp.float32), 0.0, 1.0)
  categories = jnp.asarray(categories, jnp.int32)
  batch, n = relevance.shape[:-1], relevance.shape[-1]
  _check_k(k, n)
  if weights is None:
    if num_categories is None:
      raise ValueError("coverage needs weights [..., C] or num_categories")
    weights = jnp.ones((num_categories,), jnp.float32)
  weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), batch + jnp.shape(weights)[-1:])
  valid = valid_mask(where, relevance.shape)

  def one(rel, cat, w, ok):
    def gain(uncovered, t):
      return w[cat] * rel * uncovered[cat]

    def update(uncovered, pick, t):
      return uncovered.at[cat[pick]].multiply(1.0 - rel[pick])

    return _greedy(gain, jnp.ones(w.shape, jnp.float32), update, ok, k)

  return vmap_lists(one, batch, relevance, categories, weights, valid,
                    chunk_size=CHUNK_SIZE)
