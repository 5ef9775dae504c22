"""Soft category exposure against brute-force counts of the hard top k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax import ops

METHODS = ("softsort", "neuralsort", "ot", "fast", "hard")
BATCH, N, K, C = 4, 9, 3, 3


def _brute_force_exposure(scores, categories, where, k, weights):
  """Counts categories of the k best valid items by explicit sorting."""
  out = np.zeros((scores.shape[0], C))
  for row in range(scores.shape[0]):
    valid_items = np.flatnonzero(where[row])
    best = valid_items[np.argsort(-scores[row, valid_items], kind="stable")][:k]
    for position, item in enumerate(best):
      out[row, categories[row, item]] += weights[position]
  return out


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  base = np.arange(N) * 0.1 + rng.uniform(0, 0.01, size=(BATCH, N))
  scores = np.stack([rng.permutation(row) for row in base]).astype(np.float32)
  categories = rng.integers(0, C, size=(BATCH, N))
  where = np.ones((BATCH, N), bool)
  where[0, [0, 3]] = False
  where[2, 2:] = False  # fewer valid items than k
  return scores, categories, where


@pytest.mark.parametrize("method", METHODS)
def test_exposure_matches_brute_force_at_low_temperature(method):
  scores, categories, where = _inputs()
  tolerance = 0.05 if method == "ot" else 1e-3
  counts = ops.soft_category_exposure(scores, categories, C, K, method=method,
                                      temperature=1e-3, where=where)
  np.testing.assert_allclose(counts, _brute_force_exposure(scores, categories, where, K, np.ones(K)),
                             atol=tolerance)
  discount = 1.0 / np.log2(2.0 + np.arange(K))
  weighted = ops.soft_category_exposure(scores, categories, C, K, method=method,
                                        temperature=1e-3, where=where,
                                        position_weights=discount)
  np.testing.assert_allclose(weighted, _brute_force_exposure(scores, categories, where, K, discount),
                             atol=tolerance)


@pytest.mark.parametrize("method", ("softsort", "fast"))
def test_exposure_converges_as_temperature_shrinks(method):
  scores, categories, where = _inputs(1)
  exact = _brute_force_exposure(scores, categories, where, K, np.ones(K))
  errors = []
  for temperature in (1.0, 0.1, 0.01):
    soft = ops.soft_category_exposure(scores, categories, C, K, method=method,
                                      temperature=temperature, where=where)
    np.testing.assert_allclose(np.asarray(soft).sum(-1), np.minimum(K, where.sum(-1)), atol=1e-4)
    errors.append(np.abs(np.asarray(soft) - exact).max())
  assert errors[0] > 0.05 and errors[0] >= errors[1] >= errors[2] and errors[2] < 0.01


@pytest.mark.parametrize("method", ("softsort", "fast"))
def test_exposure_gradients_are_finite_and_masked(method):
  scores, categories, where = _inputs(2)

  def objective(s):
    exposure = ops.soft_category_exposure(s, categories, C, K, method=method,
                                          temperature=0.3, where=where)
    return jnp.sum(exposure[:, 0] ** 2)

  grad = np.asarray(jax.grad(objective)(jnp.asarray(scores)))
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  np.testing.assert_array_equal(grad[~where], 0.0)


def test_out_of_range_categories():
  scores, categories, where = _inputs(3)
  bad = categories.copy()
  bad[1, 0] = C
  with pytest.raises(ValueError, match="categories"):
    ops.soft_category_exposure(scores, bad, C, K, temperature=1e-3)
  # Under jit nothing can raise: the item simply counts toward no category.
  counts = jax.jit(lambda s, c: ops.soft_category_exposure(s, c, C, K, method="hard"))(scores, bad)
  hard = ops.soft_category_exposure(scores, categories, C, K, method="hard")
  top_item_is_bad = np.argsort(-scores[1])[:K].tolist().count(0) == 1
  np.testing.assert_allclose(np.asarray(counts).sum(-1)[1], K - int(top_item_is_bad))
  np.testing.assert_allclose(np.asarray(counts)[[0, 2, 3]], np.asarray(hard)[[0, 2, 3]])


def test_exposure_bad_arguments():
  scores, categories, _ = _inputs(4)
  with pytest.raises(ValueError, match="k must"):
    ops.soft_category_exposure(scores, categories, C, N + 1)
  with pytest.raises(ValueError, match="num_categories"):
    ops.soft_category_exposure(scores, categories, 0, K)
  with pytest.raises(ValueError, match="position_weights"):
    ops.soft_category_exposure(scores, categories, C, K, position_weights=np.ones(K + 1))
  with pytest.raises(ValueError, match="non-increasing"):
    ops.soft_category_exposure(scores, categories, C, K, position_weights=np.arange(K) + 1.0)
