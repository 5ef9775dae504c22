"""Soft category exposure: the expected count of each category among the top k.

``soft_category_exposure`` weights every item by its soft membership of the top
k (or, with ``position_weights``, by the expected weight of the position it
takes, e.g. a DCG discount) and sums those weights per category. As the
temperature goes to 0 it equals the hard count, so quota penalties built on it
(``hgrank_jax.losses.quota``) become exact constraints in the limit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.ops import fast_sort
from hgrank_jax.ops import sorting


def _is_concrete(x):
  return not isinstance(x, jax.core.Tracer)


def _validate_categories(categories, num_categories):
  """Eager range check; under jit out-of-range ids count toward no category."""
  if _is_concrete(categories):
    values = np.asarray(categories)
    if values.size and (values.min() < 0 or values.max() >= num_categories):
      raise ValueError(
          f"categories must lie in [0, num_categories={num_categories}); got "
          f"values in [{values.min()}, {values.max()}]. Under jit such ids "
          "are not checked and count toward no category.")


def _validate_position_weights(position_weights, k, method):
  weights = jnp.asarray(position_weights)
  if weights.shape != (k,):
    raise ValueError(
        f"position_weights must have shape (k,) = ({k},), got {weights.shape}.")
  if method == "fast" and _is_concrete(position_weights):
    values = np.asarray(position_weights, np.float64)
    if (values < 0).any() or (np.diff(values) > 0).any():
      raise ValueError(
          "position_weights must be non-negative and non-increasing for "
          "method='fast' (it projects onto their permutahedron); got "
          f"{values}.")
  return weights


def soft_category_exposure(scores, categories, num_categories, k, *,
                           method="fast", temperature=1.0,
                           position_weights=None, where=None, **kwargs):
  """Expected (optionally position-weighted) count of each category in the top k.

  Args:
    scores: float ``[..., n]``.
    categories: int ``[..., n]`` category id of every item, in
      ``[0, num_categories)``. Checked eagerly when concrete; under jit an
      out-of-range id counts toward no category.
    num_categories: static int C >= 1.
    k: static int, 1 <= k <= n.
    method, temperature, where, **kwargs: as for ``sorting.soft_topk_mask``.
    position_weights: optional float ``[k]``, the weight of positions
      0..k-1 (e.g. ``1 / log2(2 + arange(k))``). For ``method="fast"`` they
      must be non-negative and non-increasing (checked when concrete).

  Returns:
    float ``[..., C]``. Without weights each entry is in [0, k] and the
    entries sum to min(k, number of valid items) when every id is in range.

  >>> soft_category_exposure(jnp.array([3.0, 2.0, 1.0]), jnp.array([0, 1, 0]),
  ...                        2, 2, temperature=1e-3)
  Array([1., 1.], dtype=float32)
  """
  if int(num_categories) != num_categories or num_categories < 1:
    raise ValueError(f"num_categories must be a positive integer, got {num_categories!r}.")
  _validate_categories(categories, num_categories)
  options = sorting.make_options(method, temperature, **kwargs)
  n = jnp.shape(scores)[-1] if jnp.ndim(scores) else 0
  k = sorting._check_k(k, n)  # pylint: disable=protected-access
  if position_weights is not None:
    position_weights = _validate_position_weights(position_weights, k, options.method)
  static_options, traced_temperature = sorting.split_temperature(options)
  return _exposure(scores, categories, where, position_weights,
                   int(num_categories), k, static_options, traced_temperature)


@functools.partial(jax.jit, static_argnames=("num_categories", "k", "options"))
def _exposure(scores, categories, where, position_weights, num_categories, k,
              options, temperature):
  """Jitted body of ``soft_category_exposure`` (arguments already validated)."""
  options = sorting.with_temperature(options, temperature)
  prep = sorting.prepare(scores, where, options.scale_invariant)
  n = prep.scores.shape[-1]
  if position_weights is None:
    weights = jnp.ones((k,), prep.scores.dtype)
  else:
    weights = position_weights.astype(prep.scores.dtype)
  padded_weights = jnp.concatenate([weights, jnp.zeros((n - k,), weights.dtype)])
  hard = jnp.where(prep.valid, padded_weights[prep.inverse], 0.0)
  if options.method == "hard":
    item_weight = hard
  elif options.method == "fast":
    # Unit weights make this exactly the fast soft top-k mask.
    soft = fast_sort.project_onto_weights(
        prep.scores, prep.valid, prep.order, prep.inverse, options.temperature,
        jnp.broadcast_to(padded_weights, prep.scores.shape),
        options.pav_implementation)
    item_weight = sorting._straight_through(soft, hard, options)  # pylint: disable=protected-access
  else:
    permutation = sorting.relaxed_permutation(prep, options)
    if position_weights is None:
      soft = sorting.capped_mask(permutation, prep.valid, k)
    else:
      soft = jnp.einsum("...ji,j->...i", permutation[..., :k, :], weights)
      soft = jnp.where(prep.valid, soft, 0.0)
    item_weight = sorting._straight_through(soft, hard, options)  # pylint: disable=protected-access
  membership = jax.nn.one_hot(categories, num_categories, dtype=item_weight.dtype)
  return jnp.einsum("...i,...ic->...c", item_weight, membership)
