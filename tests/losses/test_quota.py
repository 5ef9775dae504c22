"""Quota penalty, Lagrangian dual ascent and soft NDCG against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.losses import quota
from hgrank_jax.ops import soft_category_exposure


def test_quota_penalty_matches_numpy():
  rng = np.random.default_rng(0)
  exposure = rng.uniform(0, 5, size=(6, 4)).astype(np.float32)
  low = np.array([1.0, 2.0, 0.0, 3.0], np.float32)
  high = np.array([2.0, 4.0, 1.0, 5.0], np.float32)
  expected = np.mean(np.sum(np.maximum(low - exposure, 0) ** 2
                            + np.maximum(exposure - high, 0) ** 2, -1))
  got = quota.quota_penalty(exposure, min_count=low, max_count=high)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert float(quota.quota_penalty(exposure)) == 0.0
  inside = np.clip(exposure, low, high)
  assert float(quota.quota_penalty(inside, min_count=low, max_count=high)) == 0.0
  grad = jax.grad(lambda e: quota.quota_penalty(e, min_count=low, max_count=high))(exposure)
  np.testing.assert_allclose(
      grad, (-2 * np.maximum(low - exposure, 0) + 2 * np.maximum(exposure - high, 0)) / 6,
      rtol=1e-5, atol=1e-7)


def test_dual_ascent_prices_violations_and_relaxes_slack():
  multipliers = quota.init_quota_multipliers(2)
  exposure = jnp.array([[0.0, 3.0], [1.0, 3.0]])  # category 0 short by 1.5 on average
  for _ in range(3):
    multipliers = quota.dual_ascent_update(multipliers, exposure, min_count=1.5,
                                           max_count=2.0, step_size=0.5)
  np.testing.assert_allclose(multipliers.lower, [3 * 0.5 * 1.0, 0.0])
  np.testing.assert_allclose(multipliers.upper, [0.0, 3 * 0.5 * 1.0])
  # Once the quota holds with slack the price decays back to zero, never below.
  relaxed = quota.dual_ascent_update(multipliers, jnp.array([[1.8, 1.8]]),
                                     min_count=1.5, max_count=2.0, step_size=10.0)
  np.testing.assert_array_equal(relaxed.lower, [0.0, 0.0])
  np.testing.assert_array_equal(relaxed.upper, [0.0, 0.0])


def test_lagrangian_gradient_pushes_toward_feasibility():
  rng = np.random.default_rng(1)
  scores = jnp.asarray(rng.normal(size=(3, 8)).astype(np.float32))
  categories = jnp.asarray(rng.integers(0, 2, size=(3, 8)))
  multipliers = quota.QuotaMultipliers(lower=jnp.array([2.0, 0.0]), upper=jnp.zeros(2))

  def lagrangian(s):
    exposure = soft_category_exposure(s, categories, 2, 3, temperature=0.5)
    return quota.quota_lagrangian(exposure, multipliers, min_count=2.0)

  grad = jax.grad(lagrangian)(scores)
  # Descending the Lagrangian raises category-0 scores and lowers the others.
  is_zero = np.asarray(categories) == 0
  assert (np.asarray(grad)[is_zero] <= 1e-7).all()
  assert (np.asarray(grad)[~is_zero] >= -1e-7).all()
  value = quota.quota_lagrangian(jnp.array([[1.0, 4.0]]), multipliers, min_count=2.0)
  np.testing.assert_allclose(value, 2.0 * (2.0 - 1.0))


def _numpy_ndcg(scores, labels, topn):
  order = np.argsort(-scores, kind="stable")
  gains = 2.0 ** labels - 1
  discount = 1 / np.log2(np.arange(len(scores)) + 2)
  dcg = np.sum(gains[order][:topn] * discount[:topn])
  ideal = np.sum(np.sort(gains)[::-1][:topn] * discount[:topn])
  return dcg / ideal


@pytest.mark.parametrize("method", ("fast", "softsort"))
def test_soft_ndcg_matches_hard_ndcg_at_low_temperature(method):
  rng = np.random.default_rng(2)
  base = np.arange(10) * 0.1
  scores = np.stack([rng.permutation(base) for _ in range(4)]).astype(np.float32)
  labels = rng.integers(0, 3, size=(4, 10)).astype(np.float32)
  labels[3] = 0.0  # no positive: left out of the mean
  expected = -np.mean([_numpy_ndcg(scores[r], labels[r], 5) for r in range(3)])
  got = quota.soft_ndcg_loss(scores, labels, topn=5, method=method, temperature=1e-3)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  grad = jax.grad(lambda s: quota.soft_ndcg_loss(s, labels, topn=5, method=method,
                                                 temperature=0.5))(scores)
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0
  np.testing.assert_array_equal(np.asarray(grad)[3], 0.0)


def test_soft_ndcg_masks_and_degenerate_lists():
  scores = jnp.array([[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
  labels = jnp.array([[0.0, 1.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
  where = jnp.array([[True, True, True, False], [True, True, True, True]])
  # Padded item 3 carries the big label but cannot count: item 1 is the only
  # relevant valid item, ranked second.
  got = quota.soft_ndcg_loss(scores, labels, where=where, temperature=1e-3)
  np.testing.assert_allclose(got, -1.0 / np.log2(3.0), atol=1e-5)
  empty = quota.soft_ndcg_loss(scores, labels, where=jnp.zeros((2, 4), bool))
  assert float(empty) == 0.0
  with pytest.raises(ValueError, match="topn"):
    quota.soft_ndcg_loss(scores, labels, topn=0)
