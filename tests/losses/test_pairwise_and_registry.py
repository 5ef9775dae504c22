"""Tests for pairwise_logistic (via Rax) and the loss registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax import losses


def _np_pairwise_logistic(logits, labels, valid, segments):
  total, count = 0.0, 0
  for i in range(len(labels)):
    for j in range(len(labels)):
      if (valid[i] and valid[j] and segments[i] == segments[j]
          and labels[i] > labels[j]):
        total += np.log1p(np.exp(-(float(logits[i]) - float(logits[j]))))
        count += 1
  return total / count if count else 0.0


def test_pairwise_logistic_matches_brute_force():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=30).astype(np.float32)
  labels = rng.integers(0, 3, size=30).astype(np.float32)
  valid = rng.random(30) > 0.2
  segments = rng.integers(0, 3, size=30)
  np.testing.assert_allclose(
      losses.pairwise_logistic(logits, labels, where=valid),
      _np_pairwise_logistic(logits, labels, valid, np.zeros(30)), rtol=1e-5)
  np.testing.assert_allclose(
      losses.pairwise_logistic(logits, labels, where=valid, segments=segments),
      _np_pairwise_logistic(logits, labels, valid, segments), rtol=1e-5)
  grad = jax.grad(lambda s: losses.pairwise_logistic(
      s, labels, where=valid))(jnp.asarray(logits) * 50)
  assert np.all(np.isfinite(grad))


def test_pairwise_logistic_no_pairs_is_zero():
  assert float(losses.pairwise_logistic(jnp.ones(4), jnp.zeros(4))) == 0.0
  assert float(losses.pairwise_logistic(
      jnp.ones(4), jnp.array([1., 0., 1., 0.]), where=jnp.zeros(4, bool))) == 0.


def test_registry_names_and_combinations():
  assert losses.get_loss("list_ce") is losses.list_ce
  assert losses.get_loss("group_ce") is losses.group_ce
  assert losses.get_loss("jrc") is losses.jrc_loss
  s = jnp.array([1.5, -0.5, 0.2, 0.0])
  y = jnp.array([1., 0., 0., 1.])
  for name in ("list_ce", "softmax_ce", "pairwise_logistic"):
    fn = losses.get_loss(f"logloss+{name}", weight=0.3)
    np.testing.assert_allclose(
        fn(s, y), losses.logloss(s, y) + 0.3 * losses.get_loss(name)(s, y),
        rtol=1e-6)
  # Extra keywords reach the ranking loss.
  codes = jnp.array([[0, 1], [0, 1], [1, 0], [1, 1]])
  fn = losses.get_loss("logloss+group_ce")
  np.testing.assert_allclose(
      fn(s, y, codes=codes, log_sigma=jnp.zeros(2)),
      losses.logloss(s, y) + losses.group_ce(s, y, codes=codes,
                                             log_sigma=jnp.zeros(2)),
      rtol=1e-6)
  assert set(losses.TABLE1_WEIGHT_GRID) == {0.1, 0.3, 1.0}


def test_registry_rejects_unknown_names_clearly():
  with pytest.raises(ValueError, match="unknown loss name 'listce'.*list_ce"):
    losses.get_loss("listce")
  with pytest.raises(ValueError, match="unknown loss name"):
    losses.get_loss("logloss+jrc")
  with pytest.raises(ValueError, match="weight"):
    losses.get_loss("list_ce", weight=0.3)


def test_soft_ndcg_registry_adapter():
  fn = losses.get_loss("soft_ndcg")
  s = jnp.array([2.0, 1.0, 0.0])
  y = jnp.array([1.0, 0.0, 0.0])
  np.testing.assert_allclose(
      fn(s, y, temperature=1e-3), losses.soft_ndcg_loss(s, y, temperature=1e-3))
  with pytest.raises(ValueError, match="segments"):
    fn(s, y, segments=jnp.zeros(3, int))
