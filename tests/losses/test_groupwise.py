"""Tests for group_ce (Eq. 9) and per-level ListCE against numpy loops."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from hgrank_jax import losses
from tests.losses.reference import np_list_ce_groups

N = 64
LEVELS = 3
K = 3


def _batch(seed):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=N) * 2).astype(np.float32)
  labels = (rng.random(N) < 0.2).astype(np.float32)
  codes = rng.integers(0, K, size=(N, LEVELS))
  valid = rng.random(N) > 0.2
  # Pin down a prefix group without any positive.
  labels[codes[:, 0] == 0] = 0.0
  return logits, labels, codes, valid


def _np_per_level(logits, labels, codes, valid, segments=None):
  values = []
  for level in range(1, codes.shape[1] + 1):
    keys = [((segments[i],) if segments is not None else ()) +
            tuple(codes[i, :level]) for i in range(len(logits))]
    values.append(np_list_ce_groups(logits, labels, keys, valid))
  return np.array(values)


def _np_group_ce(level_values, log_sigma):
  return np.sum(0.5 * np.exp(-2 * log_sigma) * level_values + log_sigma)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_level_and_group_ce_match_numpy(seed):
  logits, labels, codes, valid = _batch(seed)
  log_sigma = np.array([0.3, -0.2, 0.1], np.float32)
  want_levels = _np_per_level(logits, labels, codes, valid)
  np.testing.assert_allclose(
      losses.per_level_list_ce(logits, labels, codes=codes, where=valid),
      want_levels, rtol=1e-5)
  np.testing.assert_allclose(
      losses.group_ce(logits, labels, codes=codes, log_sigma=log_sigma,
                      where=valid),
      _np_group_ce(want_levels, log_sigma), rtol=1e-5)



@pytest.mark.parametrize("codebook_size", [K, 50])  # 3**3 counts into a table; 50**3 sorts
def test_known_codebook_size_groups_without_sorting_same_values(codebook_size):
  logits, labels, codes, valid = _batch(3)
  want_levels = _np_per_level(logits, labels, codes, valid)
  jitted = jax.jit(lambda s, y, c, w: losses.per_level_list_ce(
      s, y, codes=c, where=w, codebook_size=codebook_size))
  np.testing.assert_allclose(jitted(logits, labels, codes, valid), want_levels, rtol=1e-5)
  # Several lists ([B, n]) never share a group across lists.
  lists = 4
  rows = N // lists
  keyed = [np_list_ce_groups(logits, labels, [(i // rows,) + tuple(codes[i, :level])
                                              for i in range(N)], valid)
           for level in range(1, LEVELS + 1)]
  got = losses.per_level_list_ce(logits.reshape(lists, rows), labels.reshape(lists, rows),
                                 codes=codes.reshape(lists, rows, LEVELS),
                                 where=valid.reshape(lists, rows), codebook_size=codebook_size)
  np.testing.assert_allclose(got, keyed, rtol=1e-5)


def test_negative_hardness_matches_closed_form_gradients():
  # For a negative i in group G (with positives) of level l, ListCE_l on log-sigmoid
  # scores has d/ds_i = Y/(Y + eps) * softmax_G(log sigmoid s)_i * (1 - sigmoid(s_i)) / M_l.
  logits, labels, codes, valid = _batch(4)
  got = losses.negative_hardness_per_level(logits, labels, codes=codes, where=valid,
                                           codebook_size=K)
  sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
  negative = valid & (labels == 0)
  for level in range(1, LEVELS + 1):
    keys = [tuple(codes[i, :level]) for i in range(N)]
    groups = {}
    for i in np.flatnonzero(valid):
      groups.setdefault(keys[i], []).append(i)
    grad = np.zeros(N)
    contrasted, contrasting = [], []
    for rows in groups.values():
      rows = np.array(rows)
      total = labels[rows].sum()
      probs = sig[rows] / sig[rows].sum()
      grad[rows] = total / (total + 1e-8) * probs * (1 - sig[rows]) / len(groups)
      if total > 0:
        contrasted += [i for i in rows if labels[i] == 0]
        contrasting += [i for i in rows if labels[i] > 0]
    np.testing.assert_allclose(got["neg_grad"][level - 1], grad[negative].mean(), rtol=1e-4)
    np.testing.assert_allclose(got["neg_grad_per_group"][level - 1],
                               grad[negative].mean() * len(groups), rtol=1e-4)
    np.testing.assert_allclose(got["neg_logit"][level - 1], logits[contrasted].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["pos_logit"][level - 1], logits[contrasting].mean(), rtol=1e-5)
  # Without codebook_size (sorting path) the same numbers.
  unsized = losses.negative_hardness_per_level(logits, labels, codes=codes, where=valid)
  for key in got:
    np.testing.assert_allclose(unsized[key], got[key], rtol=1e-6)

def test_group_ce_with_segments_splits_every_level():
  logits, labels, codes, valid = _batch(2)
  segments = np.arange(N) % 2
  np.testing.assert_allclose(
      losses.per_level_list_ce(logits, labels, codes=codes, where=valid,
                               segments=segments),
      _np_per_level(logits, labels, codes, valid, segments), rtol=1e-5)


def test_level_one_equals_list_ce_on_first_code():
  logits, labels, codes, valid = _batch(3)
  levels = losses.per_level_list_ce(logits, labels, codes=codes[:, :1],
                                    where=valid)
  np.testing.assert_allclose(
      levels[0],
      losses.list_ce(logits, labels, where=valid, segments=codes[:, 0]),
      rtol=1e-6)


def test_optimal_sigma_squared_equals_level_list_ce():
  logits, labels, codes, valid = _batch(4)
  level_values = np.asarray(
      losses.per_level_list_ce(logits, labels, codes=codes, where=valid))
  objective = jax.jit(lambda ls: losses.group_ce(
      logits, labels, codes=codes, log_sigma=ls, where=valid))
  result = minimize(
      lambda ls: float(objective(jnp.asarray(ls, jnp.float32))),
      x0=np.zeros(LEVELS),
      jac=lambda ls: np.asarray(jax.grad(objective)(
          jnp.asarray(ls, jnp.float32)), np.float64),
      method="BFGS", options={"gtol": 1e-7})
  np.testing.assert_allclose(np.exp(2 * result.x), level_values, rtol=1e-3)


def test_fully_masked_rows_and_gradients():
  logits, labels, codes, _ = _batch(5)
  where = np.zeros(N, bool)
  log_sigma = jnp.zeros(LEVELS)
  value, (grad_s, grad_ls) = jax.value_and_grad(
      lambda s, ls: losses.group_ce(s, labels, codes=codes, log_sigma=ls,
                                    where=where), argnums=(0, 1))(
                                        jnp.asarray(logits), log_sigma)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad_s, np.zeros(N))
  # With every ListCE at 0 only the log-sigma terms remain: d/dls = 1.
  np.testing.assert_allclose(grad_ls, np.ones(LEVELS))


def test_jit_vmap_agree_and_gradients_finite():
  batches = [_batch(seed) for seed in (6, 7)]
  logits, labels, codes, valid = (np.stack(x) for x in zip(*batches))
  logits = logits * 20  # saturated sigmoids
  log_sigma = jnp.array([0.1, 0.2, -0.3])
  call = lambda s, y, c, w: losses.group_ce(s, y, codes=c, log_sigma=log_sigma,
                                            where=w)
  batched = jax.vmap(call)(logits, labels, codes, valid)
  for row in range(2):
    want = _np_group_ce(
        _np_per_level(logits[row], labels[row], codes[row], valid[row]),
        np.asarray(log_sigma))
    np.testing.assert_allclose(batched[row], want, rtol=1e-4)
    np.testing.assert_allclose(
        jax.jit(call)(logits[row], labels[row], codes[row], valid[row]), want,
        rtol=1e-4)
  grad = jax.grad(lambda s: jnp.sum(jax.vmap(call)(s, labels, codes, valid)))(
      jnp.asarray(logits))
  assert np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[~valid] == 0.0)


def test_scales_to_large_batches_in_linear_memory():
  # 200k rows and K**L = 2**48 possible prefixes: anything quadratic in rows
  # or linear in K**L would not fit in memory.
  rng = np.random.default_rng(8)
  n = 200_000
  logits = jnp.asarray(rng.normal(size=n), jnp.float32)
  labels = jnp.asarray(rng.random(n) < 0.1, jnp.float32)
  codes = jnp.asarray(rng.integers(0, 2**16, size=(n, 3)), jnp.int32)
  # Arrays go in as arguments: closed-over arrays would become constants that
  # XLA tries to fold at compile time.
  fn = jax.jit(lambda s, y, c: losses.group_ce(s, y, codes=c,
                                               log_sigma=jnp.zeros(3)))
  jax.block_until_ready(fn(logits, labels, codes))
  start = time.perf_counter()
  value = jax.block_until_ready(fn(logits, labels, codes))
  assert np.isfinite(float(value))
  assert time.perf_counter() - start < 5.0


def test_bad_input_names_the_argument():
  logits, labels, codes, _ = _batch(9)
  log_sigma = jnp.zeros(LEVELS)
  with pytest.raises(ValueError, match="codes"):
    losses.group_ce(logits, labels, codes=codes - 1, log_sigma=log_sigma)
  with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
    losses.group_ce(logits, labels, codes=codes, log_sigma=log_sigma,
                    codebook_size=2)
  with pytest.raises(TypeError, match="codes"):
    losses.group_ce(logits, labels, codes=codes.astype(np.float32),
                    log_sigma=log_sigma)
  with pytest.raises(ValueError, match="codes"):
    jax.jit(lambda c: losses.group_ce(logits, labels, codes=c,
                                      log_sigma=jnp.zeros(3)))(codes[:10])
  with pytest.raises(ValueError, match="log_sigma"):
    losses.group_ce(logits, labels, codes=codes, log_sigma=jnp.zeros(2))
  with pytest.raises(ValueError, match="labels"):
    losses.group_ce(logits, labels[:5], codes=codes, log_sigma=log_sigma)
  with pytest.raises(ValueError, match="codebook_size"):
    jax.jit(lambda c: losses.group_ce(logits, labels, codes=c,
                                      log_sigma=log_sigma, codebook_size=0))(
                                          codes)
