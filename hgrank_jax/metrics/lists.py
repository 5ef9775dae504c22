"""Metrics of final lists: category exposure, quotas, diversity, calibration, coverage.

Every function takes final lists as candidate indices ``[..., k]`` into the
last candidate axis of the per-candidate arrays (``[..., n]`` or
``[..., n, d]``), position 0 on top, ``-1`` for an empty slot; empty slots
count for nothing. They return one value per list ``[...]`` (or per list and
category) and are jit- and vmap-safe; average over lists yourself.
"""

import jax.numpy as jnp


def _gather(values, indices):
  """``values[..., indices, ...]`` along the candidate axis, and the validity mask."""
  indices = jnp.asarray(indices)
  valid = indices >= 0
  slot = jnp.where(valid, indices, 0)
  values = jnp.asarray(values)
  extra = values.ndim - slot.ndim
  slot = slot.reshape(slot.shape + (1,) * extra)
  return jnp.take_along_axis(values, slot, axis=slot.ndim - extra - 1), valid


def category_exposure(indices, categories, num_categories, *, position_weights=None):
  """(Position-weighted) count of each category in the final lists.

  Args:
    indices: int ``[..., k]``.
    categories: int ``[..., n]`` in ``[0, C)``.
    num_categories: static int C.
    position_weights: optional float ``[k]``; None counts every slot 1.

  Returns:
    float32 ``[..., C]``.
  """
  category, valid = _gather(categories, indices)
  k = category.shape[-1]
  weight = jnp.ones((k,), jnp.float32) if position_weights is None else jnp.asarray(
      position_weights, jnp.float32)
  one_hot = (category[..., None] == jnp.arange(num_categories)).astype(jnp.float32)
  return jnp.einsum("...kc,...k->...c", one_hot, jnp.where(valid, weight, 0.0))


def quota_violation(indices, categories, num_categories, *, min_count=None, max_count=None):
  """Total count violation per list: ``sum_c relu(min_c - n_c) + relu(n_c - max_c)``.

  Args:
    indices, categories, num_categories: as for :func:`category_exposure`.
    min_count, max_count: optional, scalar or broadcastable to ``[..., C]``.

  Returns:
    float32 ``[...]``, 0 exactly when every quota holds.
  """
  counts = category_exposure(indices, categories, num_categories)
  shortfall = 0.0 if min_count is None else jnp.maximum(jnp.asarray(min_count) - counts, 0.0)
  excess = 0.0 if max_count is None else jnp.maximum(counts - jnp.asarray(max_count), 0.0)
  return jnp.sum(shortfall + excess + jnp.zeros_like(counts), axis=-1)


def exposure_share_error(indices, categories, target_share, *, position_weights=None):
  """Mean absolute error between the list's category shares and a target share.

  Args:
    indices, categories: as for :func:`category_exposure`.
    target_share: float ``[..., C]`` summing to 1.
    position_weights: optional float ``[k]``.

  Returns:
    float32 ``[...]``; NaN for an empty list (no share defined).
  """
  target_share = jnp.asarray(target_share, jnp.float32)
  exposure = category_exposure(indices, categories, target_share.shape[-1],
                               position_weights=position_weights)
  share = exposure / jnp.sum(exposure, -1, keepdims=True)
  return jnp.mean(jnp.abs(share - target_share), axis=-1)


def intra_list_diversity(indices, embeddings):
  """Mean pairwise cosine distance ``1 - cos(e_i, e_j)`` over pairs of the list.

  Args:
    indices: int ``[..., k]``.
    embeddings: float ``[..., n, d]``.

  Returns:
    float32 ``[...]``; NaN for lists with fewer than two items.
  """
  embedding, valid = _gather(embeddings, indices)
  unit = embedding / jnp.maximum(jnp.linalg.norm(embedding, axis=-1, keepdims=True), 1e-12)
  distance = 1.0 - jnp.einsum("...id,...jd->...ij", unit, unit)
  pair = valid[..., :, None] & valid[..., None, :] & ~jnp.eye(valid.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(pair, distance, 0.0), (-2, -1)) / jnp.sum(pair, (-2, -1))


def calibration_kl(indices, item_dist, target_dist, *, alpha=0.01):
  """Steck's miscalibration ``KL(p || (1 - alpha) q + alpha p)``.

  ``q`` is the mean category distribution of the list's items, ``p`` the
  target (e.g. the user's history distribution); the alpha-mix keeps it finite.

  Args:
    indices: int ``[..., k]``.
    item_dist: float ``[..., n, C]`` rows summing to 1 (one-hot categories work).
    target_dist: float ``[..., C]`` summing to 1.
    alpha: float in (0, 1).

  Returns:
    float32 ``[...]`` >= 0; NaN for an empty list.
  """
  dist, valid = _gather(item_dist, indices)
  list_dist = jnp.sum(jnp.where(valid[..., None], dist, 0.0), -2) / jnp.sum(valid, -1)[..., None]
  target = jnp.asarray(target_dist, jnp.float32)
  smoothed = (1.0 - alpha) * list_dist + alpha * target
  safe = jnp.where(target > 0, target, 1.0)
  return jnp.sum(jnp.where(target > 0, target * jnp.log(safe / smoothed), 0.0), -1)


def coverage(indices, categories, num_categories, *, weights=None):
  """Weighted share of categories present in the list.

  Args:
    indices, categories, num_categories: as for :func:`category_exposure`.
    weights: optional float ``[..., C]`` (e.g. the user's interest); None
      weighs every category 1, giving the fraction of the C categories shown.

  Returns:
    float32 ``[...]`` in [0, 1].
  """
  present = category_exposure(indices, categories, num_categories) > 0
  weights = jnp.ones((num_categories,), jnp.float32) if weights is None else jnp.asarray(
      weights, jnp.float32)
  weights = jnp.broadcast_to(weights, present.shape)
  return jnp.sum(jnp.where(present, weights, 0.0), -1) / jnp.sum(weights, -1)
