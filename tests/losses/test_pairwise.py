"""pairwise_logistic against Rax's n x n loss and a numpy brute force.

The tiled loss must give Rax's values and gradients whatever the tiles see:
lists longer than a tile, segments longer than a tile (windows spanning several
tiles), short groups (compared as shifted vectors), graded and non-integer
labels with ties, masked rows, several leading lists and extreme
logits. Its compiled memory must stay far below one ``n x n`` float array.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax

from hgrank_jax import losses
from hgrank_jax.losses import pairwise


def _np_pairwise(logits, labels, valid, segments):
  """Mean and d/dlogits of log(1 + exp(s_j - s_i)) over pairs y_i > y_j, per list."""
  logits = np.asarray(logits, np.float64).reshape(-1, np.shape(logits)[-1])
  labels = np.asarray(labels, np.float64).reshape(logits.shape)
  valid = np.asarray(valid).reshape(logits.shape)
  segments = np.asarray(segments).reshape(logits.shape)
  total, count = 0.0, 0
  grad = np.zeros_like(logits)
  for b in range(logits.shape[0]):
    for i in range(logits.shape[1]):
      for j in range(logits.shape[1]):
        if (valid[b, i] and valid[b, j] and segments[b, i] == segments[b, j]
            and labels[b, i] > labels[b, j]):
          d = logits[b, j] - logits[b, i]
          total += np.logaddexp(0.0, d)
          sig = 1.0 / (1.0 + np.exp(-d))
          grad[b, j] += sig
          grad[b, i] -= sig
          count += 1
  if not count:
    return 0.0, grad
  return total / count, grad / count


def _rax(logits, labels, valid, segments):
  labels = jnp.where(valid, labels, 0.0)
  return rax.pairwise_logistic_loss(logits, labels, where=valid, segments=segments)


def _case(rng, shape, num_labels, num_segments, scale=3.0):
  logits = (rng.normal(size=shape) * scale).astype(np.float32)
  labels = rng.integers(0, num_labels, size=shape).astype(np.float32)
  valid = rng.random(shape) > 0.2
  segments = (rng.integers(0, num_segments, size=shape) if num_segments
              else None)
  return logits, labels, valid, segments


def test_matches_numpy_brute_force_values_and_gradients():
  rng = np.random.default_rng(0)
  # Graded labels, two leading lists, segments; and one list without them.
  for shape, num_segments in (((2, 40), 3), ((45,), None)):
    logits, labels, valid, segments = _case(rng, shape, 3, num_segments)
    labels = labels * 0.5 - 0.25  # not small integers: the two-sort order
    ref_segments = np.zeros(shape, int) if segments is None else segments
    want, want_grad = _np_pairwise(logits, labels, valid, ref_segments)
    got, got_grad = jax.value_and_grad(
        lambda s: losses.pairwise_logistic(s, labels, where=valid, segments=segments)
    )(logits)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad.reshape(shape), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape,num_labels,num_segments,scale", [
    # Longer than LIST_BLOCK: several row blocks, windows clamped at the end.
    ((700,), 2, None, 3.0),
    # Segments longer than SHIFT_LIMIT and SEGMENT_BLOCK: windows span several tiles.
    ((600,), 4, 5, 3.0),
    # Many small segments in several lists (shifted vectors); logits far apart
    # (softplus tails).
    ((3, 300), 2, 40, 50.0),
])
def test_matches_rax_values_and_gradients(shape, num_labels, num_segments, scale):
  rng = np.random.default_rng(1)
  logits, labels, valid, segments = _case(rng, shape, num_labels, num_segments, scale)
  want, want_grad = jax.value_and_grad(
      lambda s: _rax(s, labels, valid, segments))(logits)
  got, got_grad = jax.value_and_grad(
      lambda s: losses.pairwise_logistic(s, labels, where=valid, segments=segments)
  )(logits)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-3,
                             atol=1e-5 * float(np.max(np.abs(want_grad))))
  assert np.all(np.isfinite(got_grad))


def test_no_pairs_gives_zero_value_and_gradient():
  value, grad = jax.value_and_grad(losses.pairwise_logistic)(jnp.ones(5), jnp.zeros(5))
  assert float(value) == 0.0 and not np.any(grad)
  # Pairs only across segments do not count.
  assert float(losses.pairwise_logistic(
      jnp.arange(4.0), jnp.array([1., 0., 1., 0.]),
      segments=jnp.array([0, 1, 2, 3]))) == 0.0


def test_memory_stays_below_one_pair_matrix():
  # One list of 4096 rows (lists="batch"); segments take the same code paths.
  n = 4096
  args = (jnp.zeros(n), jnp.zeros(n), jnp.ones(n, bool))
  fn = jax.jit(jax.grad(lambda s, y, m: pairwise.pairwise_logistic(s, y, where=m)))
  memory = fn.lower(*args).compile().memory_analysis()
  if memory is None:
    pytest.skip("this backend reports no memory analysis")
  assert memory.temp_size_in_bytes < n * n * 4 / 16
