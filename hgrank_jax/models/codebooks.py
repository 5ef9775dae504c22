"""Pure codebook operations behind :class:`~hgrank_jax.models.rvq.ResidualVQ`.

Nearest-codeword search, the residual cascade (seed 002, Eq. 5-6), one EMA step
of counts and sums with Laplace smoothing, dead-code re-seeding, k-means(++)
initialisation and dense prefix-group ids. Each works on flat ``[n, d]`` rows
with a ``valid`` mask, is jit-safe, and is public so tests and analysis code can
use it without a module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgrank_jax.ops.segments import code_prefix_ids

# Distances and sums must not drop to bf16 on accelerators: a code flip changes groups.
_PRECISION = jax.lax.Precision.HIGHEST


def nearest_code(residuals: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codeword (squared Euclidean) for each row.

  Args:
    residuals: ``[n, d]`` float.
    codebook: ``[K, d]`` float.

  Returns:
    ``[n]`` int32; ties go to the lowest index.
  """
  # ||r||^2 is the same for every k, so it is left out of the argmin.
  cross = jnp.dot(residuals, codebook.T, precision=_PRECISION)
  distances = jnp.sum(codebook * codebook, axis=-1)[None, :] - 2.0 * cross
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def residual_cascade(x: jax.Array, codebooks: jax.Array):
  """Quantises ``x`` level by level (Eq. 5-6).

  Args:
    x: ``[n, d]`` float embeddings.
    codebooks: ``[L, K, d]`` float.

  Returns:
    ``(codes, residuals, reconstruction)``: codes ``[n, L]`` int32; residuals
    ``[L, n, d]`` where ``residuals[l]`` is the vector level ``l`` quantised
    (``residuals[0] == x``); reconstruction ``[n, d]``, the sum of chosen codewords.
  """
  codes, residuals = [], []
  residual = x
  # Unrolled (L is small and static): XLA fuses each level's distances, argmin
  # and codeword gather with the next level's, where a loop would run them one
  # iteration at a time.
  for codebook in codebooks:
    code = nearest_code(residual, codebook)
    codes.append(code)
    residuals.append(residual)
    residual = residual - codebook[code]
  return jnp.stack(codes, axis=1), jnp.stack(residuals), x - residual


def assignment_sums(codes: jax.Array, residuals: jax.Array, valid: jax.Array,
                    codebook_size: int):
  """Per level and code, the number ``n_k`` and sum of the valid rows assigned to it.

  One scatter over all levels (the row of level ``l`` and code ``k`` is
  ``l * K + k``) feeds both the EMA step and the usage statistics.

  Args:
    codes: ``[n, L]`` int codes; residuals: ``[L, n, d]``; valid: ``[n]`` bool.
    codebook_size: K (static).

  Returns:
    ``(counts [L, K], sums [L, K, d])``.
  """
  num_levels, _, d = residuals.shape
  weights = valid.astype(residuals.dtype)
  slots = (codes.T + codebook_size * jnp.arange(num_levels)[:, None]).reshape(-1)
  values = jnp.concatenate([residuals * weights[None, :, None],
                            jnp.broadcast_to(weights[None, :, None], residuals.shape[:2] + (1,))],
                           axis=-1).reshape(-1, d + 1)
  totals = jax.ops.segment_sum(values, slots, num_segments=num_levels * codebook_size)
  totals = totals.reshape(num_levels, codebook_size, d + 1)
  return totals[..., d], totals[..., :d]


def ema_update(counts, sums, residuals, codes, valid, *, decay: float, eps: float,
               batch_counts=None, batch_sums=None):
  """One EMA step of a single level's codebook statistics.

  ``N_k <- m N_k + (1-m) n_k`` and ``S_k <- m S_k + (1-m) sum_{i: c_i = k} r_i``
  over valid rows; then ``C_k = S_k / N^_k`` with the Laplace-smoothed count
  ``N^_k = (N_k + eps) / (sum N + K eps) * sum N``. Unused codes only decay.

  Args:
    counts: ``[K]`` float, EMA counts ``N``.
    sums: ``[K, d]`` float, EMA residual sums ``S``.
    residuals: ``[n, d]`` float, the residuals this level quantised.
    codes: ``[n]`` int, their codes.
    valid: ``[n]`` bool, rows that may update the statistics.
    decay: ``m`` in ``[0, 1)``.
    eps: Laplace smoothing constant, > 0.
    batch_counts, batch_sums: this batch's ``n_k`` ``[K]`` and residual sums
      ``[K, d]`` when already computed (:func:`assignment_sums`); found from
      ``residuals``, ``codes`` and ``valid`` otherwise.

  Returns:
    ``(counts, sums, codebook)`` with shapes ``[K]``, ``[K, d]``, ``[K, d]``.
  """
  num_codes = counts.shape[0]
  if batch_counts is None or batch_sums is None:
    weights = valid.astype(residuals.dtype)
    batch_counts = jax.ops.segment_sum(weights, codes, num_segments=num_codes)
    batch_sums = jax.ops.segment_sum(residuals * weights[:, None], codes,
                                     num_segments=num_codes)
  counts = decay * counts + (1.0 - decay) * batch_counts
  sums = decay * sums + (1.0 - decay) * batch_sums
  total = jnp.sum(counts)
  smoothed = (counts + eps) / (total + num_codes * eps) * total
  # With no count at all (total == 0) the codebook is undefined; keep S as is then.
  safe = jnp.where(smoothed > 0, smoothed, 1.0)
  return counts, sums, sums / safe[:, None]


def _first_shuffled_valid_rows(key, valid, count: int):
  """The first ``count`` row indices of a random order with the valid rows first,
  and the number of valid rows.

  A top-k of the noise rather than a sort of the whole batch: the same rows in
  the same order as ``argsort`` would put first, at O(n) cost.
  """
  noise = jax.random.uniform(key, valid.shape)
  _, first = jax.lax.top_k(-jnp.where(valid, noise, 2.0), min(count, valid.shape[0]))
  return first, jnp.sum(valid.astype(jnp.int32))


def replace_dead_codes(codebook, counts, sums, residuals, valid, key, *,
                       threshold: float, reset_count: float):
  """Re-seeds codes whose EMA count is below ``threshold`` with batch residuals.

  Dead codes receive distinct valid residuals of the current batch (repeating only
  when the batch holds fewer valid rows than dead codes); their count is reset to
  ``reset_count`` and their sum to ``residual * reset_count`` so that ``S / N``
  equals the new codeword. Nothing changes when the batch has no valid row.

  Args:
    codebook: ``[K, d]``; counts: ``[K]``; sums: ``[K, d]`` (after this step's EMA).
    residuals: ``[n, d]`` this level's residuals; valid: ``[n]`` bool.
    key: PRNG key for the sampling.
    threshold: codes with ``counts < threshold`` are dead.
    reset_count: the count a re-seeded code starts from.

  Returns:
    ``(codebook, counts, sums, dead)``, ``dead`` the ``[K]`` bool mask replaced.
  """
  # Dead codes take rows dead_rank mod num_valid < K: only K rows of the order matter.
  order, num_valid = _first_shuffled_valid_rows(key, valid, counts.shape[0])
  dead = (counts < threshold) & (num_valid > 0)
  dead_rank = jnp.cumsum(dead.astype(jnp.int32)) - 1
  rows = order[jnp.maximum(dead_rank, 0) % jnp.maximum(num_valid, 1)]
  samples = residuals[rows]
  codebook = jnp.where(dead[:, None], samples, codebook)
  counts = jnp.where(dead, reset_count, counts)
  sums = jnp.where(dead[:, None], samples * reset_count, sums)
  return codebook, counts, sums, dead


def kmeans_plus_plus_seeds(points, valid, key, num_clusters: int):
  """k-means++ seeding: each new seed is a valid row drawn with probability ~ D^2.

  D is the distance to the nearest seed so far; when every valid row already
  coincides with a seed, the draw is uniform over valid rows. Returns ``[K, d]``.
  """
  keys = jax.random.split(key, num_clusters)
  uniform_logits = jnp.where(valid, 0.0, -jnp.inf)
  first = points[jax.random.categorical(keys[0], uniform_logits)]
  seeds = jnp.zeros((num_clusters, points.shape[-1]), points.dtype).at[0].set(first)
  sq_dist = jnp.sum((points - first)**2, axis=-1)

  def pick(k, carry):
    seeds, sq_dist = carry
    positive = valid & (sq_dist > 0)
    logits = jnp.where(positive, jnp.log(jnp.where(positive, sq_dist, 1.0)), -jnp.inf)
    logits = jnp.where(jnp.any(positive), logits, uniform_logits)
    seed = points[jax.random.categorical(keys[k], logits)]
    return seeds.at[k].set(seed), jnp.minimum(sq_dist, jnp.sum((points - seed)**2, axis=-1))

  seeds, _ = jax.lax.fori_loop(1, num_clusters, pick, (seeds, sq_dist))
  return seeds


def kmeans(points, valid, key, num_clusters: int, num_iters: int):
  """Lloyd's k-means on the valid rows with k-means++ seeding.

  Args:
    points: ``[n, d]`` float; valid: ``[n]`` bool; key: PRNG key.
    num_clusters: K; num_iters: Lloyd iterations (static).

  Returns:
    ``(centroids [K, d], sizes [K])``; an empty cluster keeps its previous centroid.
  """
  weights = valid.astype(points.dtype)

  def assign(centroids):
    labels = nearest_code(points, centroids)
    sizes = jax.ops.segment_sum(weights, labels, num_segments=num_clusters)
    sums = jax.ops.segment_sum(points * weights[:, None], labels, num_segments=num_clusters)
    return sizes, sums

  def lloyd_step(_, centroids):
    sizes, sums = assign(centroids)
    return jnp.where(sizes[:, None] > 0, sums / jnp.maximum(sizes, 1.0)[:, None], centroids)

  seeds = kmeans_plus_plus_seeds(points, valid, key, num_clusters)
  centroids = jax.lax.fori_loop(0, num_iters, lloyd_step, seeds)
  sizes, _ = assign(centroids)
  return centroids, sizes


def prefix_group_ids(codes: jax.Array, valid: jax.Array, codebook_size: int):
  """Dense ids of the code prefixes ``c_1..c_l`` for every level, by one sort.

  A thin view of :func:`hgrank_jax.ops.segments.code_prefix_ids` (the grouping
  the GroupCE loss uses): a count into a ``K^l`` table when ``K^L`` is small, one
  sort of the rows otherwise.

  Args:
    codes: ``[n, L]`` int in ``[0, codebook_size)``.
    valid: ``[n]`` bool; invalid rows get id ``n``, past those of valid rows.
    codebook_size: K (static).

  Returns:
    ``(ids, occupied)``: ids ``[n, L]`` int32, equal at level l exactly for valid
    rows sharing their first l codes, numbered from 0; occupied ``[L]`` int32, the
    number of distinct prefixes among valid rows.
  """
  ids, occupied = code_prefix_ids(codes, codebook_size=int(codebook_size), where=valid)
  return ids.T, occupied
