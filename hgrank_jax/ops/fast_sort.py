"""The ``fast`` method: soft ranks, sort, top-k and position weights in O(n log n).

Every quantity is a Euclidean projection onto a permutahedron (Blondel et al.
2020), computed by ``isotonic.project_sorted_permutahedron`` after one sort:

* soft ranks: ``m + 1 - proj(s / tau onto P(m, m-1, ..., 1))``. Projecting the
  scores themselves onto the permutahedron of (m, ..., 1) gives "ascending"
  ranks (largest score near m); the affine flip makes rank 1 the largest.
* soft sort: ``proj(rho / tau onto P(s))`` with ``rho = (m, ..., 1)``.
* soft top-k mask: ``proj(s / tau onto P(1, ..., 1, 0, ..., 0))``; that
  permutahedron is exactly {x in [0, 1]^m : sum x = k}, so entries are in
  [0, 1] and sum to k by construction.
* soft position weights: ``proj(s / tau onto P(w_0, ..., w_{k-1}, 0, ...))``
  for non-increasing ``w`` (e.g. a DCG discount); item i's value tends to the
  weight of the position it holds as tau -> 0.

Inputs here are already prepared by ``sorting.py``: padded entries zeroed and
``order`` listing valid items by descending score, then padded items. Padded
positions are fenced off with barriers and overwritten by the caller.
"""

import jax.numpy as jnp

from hgrank_jax.ops import isotonic


def _gather(values, index):
  return jnp.take_along_axis(values, index, axis=-1)


def _valid_positions(valid, n):
  """Bool ``[..., n]``: sorted position j holds a valid item (j < m)."""
  num_valid = valid.sum(-1, keepdims=True)
  return jnp.arange(n) < num_valid


def project_onto_weights(scores, valid, order, inverse, temperature, weights,
                         implementation="auto"):
  """Projects ``scores / tau`` onto the permutahedron of sorted ``weights``.

  Args:
    scores: float ``[..., n]``, padded entries zeroed.
    valid: bool ``[..., n]``.
    order: int ``[..., n]``, item at each sorted position (valid first,
      descending score).
    inverse: int ``[..., n]``, sorted position of each item.
    temperature: positive float.
    weights: float ``[..., n]`` in sorted-position order, non-increasing over
      the valid positions; entries at padded positions are ignored.
    implementation: how PAV finds its blocks (``isotonic.IMPLEMENTATIONS``).

  Returns:
    float ``[..., n]`` per item; padded items get 0.
  """
  n = scores.shape[-1]
  in_valid_slot = _valid_positions(valid, n)
  z_sorted = jnp.where(in_valid_slot, _gather(scores, order) / temperature, 0.0)
  w_sorted = jnp.where(in_valid_slot, weights, 0.0)
  projected = isotonic.project_sorted_permutahedron(
      z_sorted, w_sorted, barrier=~in_valid_slot, implementation=implementation)
  return jnp.where(valid, _gather(projected, inverse), 0.0)


def fast_ranks(scores, valid, order, inverse, temperature, implementation="auto"):
  """Soft 1-based ranks ``[..., n]``; padded items get 0 (caller fills)."""
  n = scores.shape[-1]
  num_valid = valid.sum(-1, keepdims=True).astype(scores.dtype)
  descending_ranks = num_valid - jnp.arange(n, dtype=scores.dtype)
  ascending = project_onto_weights(
      scores, valid, order, inverse, temperature, descending_ranks, implementation)
  return jnp.where(valid, num_valid + 1.0 - ascending, 0.0)


def fast_topk_mask(scores, valid, order, inverse, temperature, k,
                   implementation="auto"):
  """Soft top-k indicator ``[..., n]`` in [0, 1] summing to min(k, m)."""
  n = scores.shape[-1]
  ones_then_zeros = (jnp.arange(n) < k).astype(scores.dtype)
  ones_then_zeros = jnp.broadcast_to(ones_then_zeros, scores.shape)
  return project_onto_weights(
      scores, valid, order, inverse, temperature, ones_then_zeros, implementation)


def fast_sort(scores, valid, order, temperature, implementation="auto"):
  """Soft sorted values, descending ``[..., n]``; padded positions get 0."""
  n = scores.shape[-1]
  in_valid_slot = _valid_positions(valid, n)
  num_valid = valid.sum(-1, keepdims=True).astype(scores.dtype)
  rho = (num_valid - jnp.arange(n, dtype=scores.dtype)) / temperature
  z_sorted = jnp.where(in_valid_slot, rho, 0.0)
  w_sorted = jnp.where(in_valid_slot, _gather(scores, order), 0.0)
  projected = isotonic.project_sorted_permutahedron(
      z_sorted, w_sorted, barrier=~in_valid_slot, implementation=implementation)
  return jnp.where(in_valid_slot, projected, 0.0)
