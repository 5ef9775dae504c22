"""Tests for jrc_loss against a direct numpy loop over rows and contexts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from hgrank_jax import losses


def _np_jrc(logits, labels, valid, contexts, alpha=0.5):
  logits = np.asarray(logits, np.float64)
  rows = [i for i in range(len(labels)) if valid[i]]
  if not rows:
    return 0.0
  calibration, ranking = 0.0, 0.0
  for i in rows:
    label = int(labels[i])
    calibration -= np.log(softmax(logits[i])[label])
    context = [j for j in rows if contexts[j] == contexts[i]]
    ranking -= logits[i, label] - logsumexp(logits[context, label])
  return (alpha * calibration + (1 - alpha) * ranking) / len(rows)


def _batch(seed, n=40):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, 2)) * 2).astype(np.float32)
  labels = (rng.random(n) < 0.3).astype(np.float32)
  users = rng.integers(0, 5, size=n)
  valid = rng.random(n) > 0.2
  return logits, labels, users, valid


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_jrc_matches_numpy_with_batch_and_user_contexts(alpha):
  logits, labels, users, valid = _batch(0)
  batch_context = np.zeros(len(labels))
  np.testing.assert_allclose(
      losses.jrc_loss(logits, labels, where=valid, alpha=alpha),
      _np_jrc(logits, labels, valid, batch_context, alpha), rtol=1e-5)
  np.testing.assert_allclose(
      losses.jrc_loss(logits, labels, where=valid, segments=users, alpha=alpha),
      _np_jrc(logits, labels, valid, users, alpha), rtol=1e-5)


def test_jrc_probability_is_softmax_of_second_logit():
  logits, _, _, _ = _batch(1)
  np.testing.assert_allclose(losses.jrc_probability(logits),
                             softmax(logits.astype(np.float64), axis=-1)[:, 1],
                             rtol=1e-5)


def test_jrc_jit_vmap_gradients_and_masking():
  batches = [_batch(seed, n=16) for seed in (2, 3)]
  logits, labels, users, valid = (np.stack(x) for x in zip(*batches))
  call = lambda f, y, w, g: losses.jrc_loss(f, y, where=w, segments=g)
  batched = jax.vmap(call)(logits, labels, valid, users)
  for row in range(2):
    want = _np_jrc(logits[row], labels[row], valid[row], users[row])
    np.testing.assert_allclose(batched[row], want, rtol=1e-5)
    np.testing.assert_allclose(
        jax.jit(call)(logits[row], labels[row], valid[row], users[row]), want,
        rtol=1e-5)
  # Leading axes without segments: each list is its own context.
  np.testing.assert_allclose(
      losses.jrc_loss(logits, labels, where=valid),
      np.sum([_np_jrc(logits[r], labels[r], valid[r], np.zeros(16))
              * valid[r].sum() for r in range(2)]) / valid.sum(), rtol=1e-5)
  grad = jax.grad(lambda f: call(f * 30, labels[0], valid[0], users[0]))(
      jnp.asarray(logits[0]))
  assert np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[~valid[0]] == 0.0)


def test_jrc_fully_masked_is_zero_and_bad_shapes_raise():
  logits, labels, _, _ = _batch(4, n=6)
  where = np.zeros(6, bool)
  value, grad = jax.value_and_grad(
      lambda f: losses.jrc_loss(f, labels, where=where))(jnp.asarray(logits))
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, np.zeros_like(logits))
  with pytest.raises(ValueError, match="logits"):
    losses.jrc_loss(np.zeros((6, 3), np.float32), labels)
  with pytest.raises(ValueError, match="labels"):
    losses.jrc_loss(logits, labels[:4])
