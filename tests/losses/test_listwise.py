"""Tests for list_ce (Eq. 8) and softmax_ce against per-group numpy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax

from hgrank_jax import losses
from tests.losses.reference import np_list_ce_groups


def _batch(seed, n=60, num_groups=7, positive_rate=0.15):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=n) * 2).astype(np.float32)
  labels = (rng.random(n) < positive_rate).astype(np.float32)
  groups = rng.integers(0, num_groups, size=n)
  valid = rng.random(n) > 0.2
  return logits, labels, groups, valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_list_ce_matches_per_group_numpy(seed):
  logits, labels, groups, valid = _batch(seed)
  # Make sure the case Eq. 8 pins down is present: a group without positives.
  labels[groups == 0] = 0.0
  got = losses.list_ce(logits, labels, where=valid, segments=groups)
  want = np_list_ce_groups(logits, labels, groups, valid)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_list_ce_group_without_positive_counts_in_m():
  logits = jnp.array([1., -1., 0.5, 0.3])
  labels = jnp.array([1., 0., 0., 0.])
  segments = jnp.array([0, 0, 1, 1])
  only_first = losses.list_ce(logits[:2], labels[:2])
  both = losses.list_ce(logits, labels, segments=segments)
  np.testing.assert_allclose(both, only_first / 2, rtol=1e-6)


def test_list_ce_whole_batch_and_leading_axes():
  logits, labels, _, valid = _batch(3)
  whole = losses.list_ce(logits, labels, where=valid)
  np.testing.assert_allclose(
      whole, np_list_ce_groups(logits, labels, np.zeros(60), valid), rtol=1e-5)
  # Leading axes: each row is its own list; the mean runs over lists.
  shaped = losses.list_ce(logits.reshape(5, 12), labels.reshape(5, 12),
                          where=valid.reshape(5, 12))
  list_index = np.repeat(np.arange(5), 12)
  np.testing.assert_allclose(
      shaped, np_list_ce_groups(logits, labels, list_index, valid), rtol=1e-5)


def test_list_ce_is_softmax_ce_of_log_sigmoid():
  logits, labels, groups, valid = _batch(4)
  np.testing.assert_allclose(
      losses.list_ce(logits, labels, where=valid, segments=groups),
      losses.softmax_ce(jax.nn.log_sigmoid(logits), labels, where=valid,
                        segments=groups), rtol=1e-5)


def test_softmax_ce_matches_numpy_and_both_paths_agree():
  logits, labels, groups, valid = _batch(5)
  want = np_list_ce_groups(logits, labels, groups, valid, transform="exp")
  segmented = losses.softmax_ce(logits, labels, where=valid, segments=groups)
  np.testing.assert_allclose(segmented, want, rtol=1e-5)
  # Whole-list path goes through rax.softmax_loss; compare with the O(n) one.
  whole_rax = losses.softmax_ce(logits, labels, where=valid)
  whole_seg = losses.softmax_ce(logits, labels, where=valid,
                                segments=np.zeros(len(logits), int))
  np.testing.assert_allclose(whole_rax, whole_seg, rtol=1e-5)
  np.testing.assert_allclose(
      whole_rax,
      np_list_ce_groups(logits, labels, np.zeros(len(logits)), valid, "exp"),
      rtol=1e-5)
  # Rax's own segmented loss (n x n masks) agrees on a small input when labels
  # are normalised the same way per segment.
  norm = labels * valid / (
      np.bincount(groups, labels * valid, minlength=7)[groups] + 1e-8)
  rax_seg = rax.softmax_loss(logits, norm.astype(np.float32), where=valid,
                             segments=groups)
  np.testing.assert_allclose(segmented, rax_seg, rtol=1e-5)


@pytest.mark.parametrize("fn", [losses.list_ce, losses.softmax_ce])
def test_fully_masked_is_zero_with_finite_gradient(fn):
  logits = jnp.array([1., 2., 3.])
  labels = jnp.array([1., 0., 1.])
  where = jnp.zeros(3, bool)
  for segments in (None, jnp.array([0, 0, 1])):
    value, grad = jax.value_and_grad(
        lambda s: fn(s, labels, where=where, segments=segments))(logits)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros(3))


@pytest.mark.parametrize("fn", [losses.list_ce, losses.softmax_ce])
def test_jit_vmap_agree_and_gradients_finite(fn):
  rng = np.random.default_rng(6)
  logits = (rng.normal(size=(3, 20)) * 30).astype(np.float32)  # saturating
  labels = (rng.random((3, 20)) < 0.3).astype(np.float32)
  groups = rng.integers(0, 4, size=(3, 20))
  valid = rng.random((3, 20)) > 0.2
  call = lambda s, y, w, g: fn(s, y, where=w, segments=g)
  batched = jax.vmap(call)(logits, labels, valid, groups)
  jitted = jax.jit(call)
  for row in range(3):
    np.testing.assert_allclose(
        batched[row], jitted(logits[row], labels[row], valid[row], groups[row]),
        rtol=1e-5)
    np.testing.assert_allclose(
        batched[row],
        np_list_ce_groups(logits[row], labels[row], groups[row], valid[row],
                          "sigmoid" if fn is losses.list_ce else "exp"),
        rtol=1e-4)
  grad = jax.grad(lambda s: call(s, labels, valid, groups))(logits)
  assert np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[~valid] == 0.0)


def test_list_ce_gradient_matches_finite_differences():
  logits, labels, groups, valid = _batch(7, n=12, num_groups=3,
                                         positive_rate=0.4)
  fn = lambda s: losses.list_ce(s, labels, where=valid, segments=groups)
  grad = np.asarray(jax.grad(fn)(jnp.asarray(logits, jnp.float32)))
  ref = lambda s: np_list_ce_groups(s, labels, groups, valid)
  step = 1e-5
  for i in range(len(logits)):
    bumped = logits.astype(np.float64).copy()
    bumped[i] += step
    lowered = logits.astype(np.float64).copy()
    lowered[i] -= step
    central = (ref(bumped) - ref(lowered)) / (2 * step)
    np.testing.assert_allclose(grad[i], central, atol=2e-4)


def test_shape_errors_name_the_argument():
  logits = jnp.zeros(5)
  with pytest.raises(ValueError, match="labels"):
    jax.jit(losses.list_ce)(logits, jnp.zeros(4))
  with pytest.raises(ValueError, match="segments"):
    losses.list_ce(logits, jnp.zeros(5), segments=jnp.zeros(3, int))
  with pytest.raises(TypeError, match="segments"):
    losses.list_ce(logits, jnp.zeros(5), segments=jnp.zeros(5))
  with pytest.raises(TypeError, match="logits"):
    losses.softmax_ce(jnp.zeros(5, int), jnp.zeros(5))
