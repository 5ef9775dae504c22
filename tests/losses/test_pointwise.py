"""Tests for the pointwise logloss against numpy and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from hgrank_jax import losses
from tests.losses.reference import np_logloss, np_sigmoid


def test_logloss_matches_numpy_and_sklearn_with_mask():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=200).astype(np.float32) * 2
  labels = (rng.random(200) < 0.3).astype(np.float32)
  valid = rng.random(200) > 0.25
  got = losses.logloss(logits, labels, where=valid)
  np.testing.assert_allclose(got, np_logloss(logits, labels, valid), rtol=1e-5)
  np.testing.assert_allclose(
      got, sk_log_loss(labels[valid], np_sigmoid(logits[valid]), labels=[0, 1]),
      rtol=1e-5)


def test_logloss_extreme_logits_are_exact_and_finite():
  logits = jnp.array([80., -80., 80.])
  labels = jnp.array([1., 0., 0.])
  np.testing.assert_allclose(losses.logloss(logits, labels), 80. / 3,
                             rtol=1e-6)
  grad = jax.grad(losses.logloss)(logits, labels)
  np.testing.assert_allclose(grad, [0., 0., 1. / 3], atol=1e-7)


def test_logloss_fully_masked_is_zero_with_zero_gradient():
  logits = jnp.array([1., 2.])
  labels = jnp.array([1., 0.])
  where = jnp.zeros(2, bool)
  assert float(losses.logloss(logits, labels, where=where)) == 0.0
  grad = jax.grad(lambda s: losses.logloss(s, labels, where=where))(logits)
  np.testing.assert_array_equal(grad, [0., 0.])


def test_logloss_jit_vmap_and_shape_errors():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 6)).astype(np.float32)
  labels = (rng.random((3, 6)) < 0.5).astype(np.float32)
  batched = jax.vmap(losses.logloss)(logits, labels)
  for row in range(3):
    np.testing.assert_allclose(
        batched[row], jax.jit(losses.logloss)(logits[row], labels[row]),
        rtol=1e-6)
  with pytest.raises(ValueError, match="labels"):
    losses.logloss(logits, labels[:, :5])
  with pytest.raises(ValueError, match="where"):
    losses.logloss(logits, labels, where=np.ones(6, bool))
