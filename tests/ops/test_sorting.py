"""Differentiable sorting ops against hard sorting, scipy references and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import stats

from hgrank_jax import ops

SOFT_METHODS = ("softsort", "neuralsort", "ot", "fast")
DENSE_METHODS = ("softsort", "neuralsort", "ot")
# ott's unrolled Sinkhorn is slow to compile; its heaviest cases are marked slow.
SOFT_METHODS_OT_SLOW = ("softsort", "neuralsort", pytest.param("ot", marks=pytest.mark.slow), "fast")

# Most tests share one shape, k and pair of temperatures so that the jitted
# ops compile once per method and are reused (compilation dominates run time).
BATCH, N, K = 4, 9, 3
SHARP, SMOOTH = 1e-3, 0.3


def _spaced_scores(rng, batch, n, gap=0.06):
  """Lists whose sorted neighbours are at least ``gap`` apart."""
  base = np.arange(n) * gap + rng.uniform(0, 0.01, size=(batch, n))
  return np.stack([rng.permutation(row) for row in base]).astype(np.float32)


def _hard_ranks(scores):
  """1-based descending ranks with numpy; ties broken by index."""
  order = np.argsort(-scores, axis=-1, kind="stable")
  ranks = np.empty_like(order)
  np.put_along_axis(ranks, order, np.arange(1, scores.shape[-1] + 1)[None], axis=-1)
  return ranks


def _standard_mask():
  """Rows: partly padded, fully valid, fully padded, a single valid entry."""
  where = np.ones((BATCH, N), bool)
  where[0, [1, 4, 8]] = False
  where[2] = False
  where[3] = np.arange(N) == 5
  return where


def _project(z, w):
  """Projection onto the permutahedron of w via scipy's isotonic regression."""
  order = np.argsort(-z, kind="stable")
  fit = optimize.isotonic_regression(z[order] - np.sort(w)[::-1], increasing=False).x
  out = np.empty_like(z)
  out[order] = z[order] - fit
  return out


# --- hard limit ---------------------------------------------------------------


@pytest.mark.parametrize("method", SOFT_METHODS)
def test_hard_limit(method):
  rng = np.random.default_rng(0)
  scores = _spaced_scores(rng, BATCH, N)
  ranks = ops.soft_rank(scores, method=method, temperature=SHARP)
  tolerance = 0.5 if method == "ot" else 0.05
  assert np.abs(np.asarray(ranks) - _hard_ranks(scores)).max() <= tolerance
  sorted_values = ops.soft_sort(scores, method=method, temperature=SHARP)
  np.testing.assert_allclose(sorted_values, -np.sort(-scores, axis=-1),
                             atol=0.05 if method == "ot" else 1e-3)
  mask = ops.soft_topk_mask(scores, K, method=method, temperature=SHARP)
  np.testing.assert_allclose(mask.sum(-1), K, atol=1e-4)
  np.testing.assert_allclose(mask, _hard_ranks(scores) <= K, atol=tolerance)


def test_hard_method_is_exact_with_zero_gradient():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  np.testing.assert_array_equal(ops.soft_rank(scores, method="hard"), _hard_ranks(scores))
  grad = jax.grad(lambda s: ops.soft_sort(s, method="hard").sum())(scores)
  np.testing.assert_array_equal(grad, 0.0)
  perm = ops.soft_permutation(scores, method="hard")
  np.testing.assert_array_equal(perm.argmax(-1), np.argsort(-scores, axis=-1, kind="stable"))


# --- structure of the relaxations ----------------------------------------------


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_permutation_is_stochastic(method):
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  perm = np.asarray(ops.soft_permutation(scores, method=method, temperature=SMOOTH))
  assert perm.shape == (BATCH, N, N)
  assert (perm >= 0).all()
  np.testing.assert_allclose(perm.sum(-1), 1.0, atol=1e-5)
  if method == "ot":
    np.testing.assert_allclose(perm.sum(-2), 1.0, atol=1e-2)


def test_column_normalisation_reduces_rank_bias():
  """The issue's measurement: raw SoftSort ranks are biased, normalised ones less so."""
  rng = np.random.default_rng(3)
  scores = rng.normal(size=(8, 64)).astype(np.float32)
  hard = _hard_ranks(scores)
  raw = ops.soft_rank(scores, method="softsort", temperature=0.1, normalise_iters=0)
  fixed = ops.soft_rank(scores, method="softsort", temperature=0.1)
  raw_error = np.abs(np.asarray(raw) - hard).max()
  fixed_error = np.abs(np.asarray(fixed) - hard).max()
  assert fixed_error < 0.5 * raw_error
  perm = ops.soft_permutation(scores, method="softsort", temperature=0.1)
  assert np.abs(np.asarray(perm).sum(-2) - 1).max() < 0.05


@pytest.mark.parametrize("method", SOFT_METHODS)
def test_topk_mask_is_capped_and_sums_to_k(method):
  rng = np.random.default_rng(4)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  where = _standard_mask()
  mask = np.asarray(ops.soft_topk_mask(scores, K, method=method, temperature=SMOOTH, where=where))
  assert mask.min() >= 0 and mask.max() <= 1
  np.testing.assert_allclose(mask.sum(-1), np.minimum(K, where.sum(-1)), atol=1e-4)
  assert (mask[~where] == 0).all()


def test_fast_matches_scipy_reference():
  rng = np.random.default_rng(5)
  base = rng.normal(size=(BATCH, N)) * 2
  base[0, :5] = base[0, 5]  # ties
  # Scaling the scores by c is the same as dividing the temperature by c.
  for scale in (0.1, 1.0, 30.0):
    scores = (base * scale).astype(np.float32)
    temperature = SMOOTH / scale
    ranks = np.asarray(ops.soft_rank(scores, temperature=SMOOTH))
    sorted_values = np.asarray(ops.soft_sort(scores, temperature=SMOOTH))
    mask = np.asarray(ops.soft_topk_mask(scores, K, temperature=SMOOTH))
    for row in range(BATCH):
      s = base[row]
      rho = np.arange(N, 0, -1.0)
      # Blondel et al.'s definition: project -s / tau onto P(1..n).
      np.testing.assert_allclose(ranks[row], _project(-s / temperature, rho), atol=2e-4)
      np.testing.assert_allclose(sorted_values[row],
                                 _project(rho / SMOOTH, scores[row].astype(float)),
                                 atol=2e-4 * max(scale, 1.0))
      topk_weights = (np.arange(N) < K).astype(float)
      np.testing.assert_allclose(mask[row], _project(s / temperature, topk_weights), atol=2e-4)


def test_fast_rank_mean_and_sum_are_exact():
  rng = np.random.default_rng(6)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32) * 0.05
  ranks = np.asarray(ops.soft_rank(scores, temperature=SMOOTH))
  np.testing.assert_allclose(ranks.sum(-1), N * (N + 1) / 2, rtol=1e-5)
  assert np.abs(ranks - _hard_ranks(scores)).max() > 0.5  # genuinely soft here
  # Soft ranks keep the order of the scores (Spearman correlation 1).
  for row in range(BATCH):
    assert stats.spearmanr(-scores[row], ranks[row]).statistic > 0.999


# --- gradients -----------------------------------------------------------------

# --- gradients -----------------------------------------------------------------


@pytest.mark.parametrize("method", SOFT_METHODS_OT_SLOW)
def test_gradients_match_finite_differences(method):
  rng = np.random.default_rng(7)
  n = 6
  kwargs = dict(method=method, temperature=1.0 if method == "ot" else 0.5)
  if method == "ot":
    kwargs.update(ot_threshold=1e-10, ot_max_iterations=300)
  with jax.enable_x64(True):
    scores = jnp.asarray(rng.normal(size=n))
    where = jnp.asarray([True, True, False, True, True, True])
    probes = jnp.asarray(rng.normal(size=(3, n)))

    def objective(s):
      total = jnp.dot(probes[0], ops.soft_rank(s, where=where, **kwargs))
      total += jnp.dot(probes[1], ops.soft_sort(s, where=where, **kwargs))
      total += jnp.dot(probes[2], ops.soft_topk_mask(s, 2, where=where, **kwargs))
      if method in DENSE_METHODS:
        total += jnp.sum(probes[:1].T * ops.soft_permutation(s, where=where, **kwargs))
      return total

    grad = jax.jit(jax.grad(objective))(scores)
    step = 1e-5
    deltas = step * jnp.eye(n)
    batched = jax.jit(jax.vmap(objective))
    numeric = (batched(scores + deltas) - batched(scores - deltas)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=1e-5, rtol=1e-4)
    assert grad[2] == 0.0  # padded entry


# --- masks ---------------------------------------------------------------------


@pytest.mark.parametrize("method", SOFT_METHODS_OT_SLOW + ("hard",))
def test_masked_entries_are_excluded(method):
  """Padded entries sort last with zero gradient; valid ones ignore them.

  The standard mask's rows cover partial padding, no padding, a fully padded
  list and a list with a single valid entry; padded slots hold NaN/inf/1e30.
  """
  rng = np.random.default_rng(8)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  where = _standard_mask()
  garbage = scores.copy()
  garbage[~where] = np.resize([np.nan, np.inf, 1e30], (~where).sum())
  kwargs = dict(method=method, temperature=SMOOTH)
  num_valid = where.sum(-1)
  ranks = np.asarray(ops.soft_rank(garbage, where=where, **kwargs))
  sorted_values = np.asarray(ops.soft_sort(garbage, where=where, **kwargs))
  mask = np.asarray(ops.soft_topk_mask(garbage, K, where=where, **kwargs))
  for row in range(BATCH):
    valid = where[row]
    m = num_valid[row]
    # Padded entries rank after every valid one, in index order.
    np.testing.assert_array_equal(ranks[row, ~valid], np.arange(m + 1, N + 1))
    np.testing.assert_array_equal(sorted_values[row, m:], 0.0)
    assert (mask[row, ~valid] == 0).all()
  np.testing.assert_allclose(mask.sum(-1), np.minimum(K, num_valid), atol=1e-4)
  # Valid entries behave exactly as the list with the padding removed.
  reference = np.asarray(ops.soft_rank(scores[:1, where[0]], **kwargs))[0]
  np.testing.assert_allclose(ranks[0, where[0]], reference, atol=1e-4)
  # A single valid entry is rank 1, sorted first, and fully in the top k.
  assert abs(ranks[3, 5] - 1.0) < 1e-5 and abs(mask[3, 5] - 1.0) < 1e-5
  np.testing.assert_allclose(sorted_values[3, 0], scores[3, 5], atol=1e-5)

  def objective(s):
    return (ops.soft_rank(s, where=where, **kwargs).sum()
            + (ops.soft_sort(s, where=where, **kwargs) ** 2).sum()
            + (ops.soft_topk_mask(s, K, where=where, **kwargs)
               * jnp.where(where, s, 0.0)).sum())

  grad = np.asarray(jax.jit(jax.grad(objective))(jnp.asarray(garbage)))
  assert np.isfinite(grad).all()
  np.testing.assert_array_equal(grad[~where], 0.0)


@pytest.mark.parametrize("method", SOFT_METHODS + ("hard",))
def test_lists_of_length_one(method):
  single = np.array([[3.5], [-2.0]], np.float32)
  kwargs = dict(method=method, temperature=SMOOTH)
  np.testing.assert_allclose(ops.soft_rank(single, **kwargs), [[1.0], [1.0]], atol=1e-5)
  np.testing.assert_allclose(ops.soft_sort(single, **kwargs), single, atol=1e-5)
  np.testing.assert_allclose(ops.soft_topk_mask(single, 1, **kwargs), [[1.0], [1.0]], atol=1e-5)
  grad = jax.grad(lambda s: ops.soft_sort(s, **kwargs).sum())(single)
  assert np.isfinite(np.asarray(grad)).all()


# --- numerics ------------------------------------------------------------------


@pytest.mark.parametrize("method", SOFT_METHODS)
def test_finite_values_and_gradients_on_hard_inputs(method):
  rng = np.random.default_rng(10)
  cases = np.stack([
      np.full(N, 0.7),  # all tied
      np.repeat(rng.normal(size=N), 2)[:N],  # pairs of exact ties
      rng.normal(size=N) * 1e4,  # large magnitude
      np.concatenate([[1e4, -1e4], 1e-7 * rng.normal(size=N - 2)]),  # near ties + outliers
  ]).astype(np.float32)
  kwargs = dict(method=method, temperature=SHARP)

  def objective(s):
    return (ops.soft_rank(s, **kwargs).sum() * 0.1
            + ops.soft_sort(s, **kwargs)[:, 0].sum()
            + (ops.soft_topk_mask(s, K, **kwargs) * jnp.arange(N)).sum())

  value, grad = jax.jit(jax.value_and_grad(objective))(cases)
  assert np.isfinite(value)
  assert np.isfinite(np.asarray(grad)).all()
  ranks = np.asarray(ops.soft_rank(cases, **kwargs))
  assert np.isfinite(ranks).all()
  np.testing.assert_allclose(ranks.sum(-1), N * (N + 1) / 2, rtol=1e-3)
  # Large, well separated scores still reach the hard ranks.
  if method != "ot":
    np.testing.assert_allclose(ranks[2], _hard_ranks(cases[2:3])[0], atol=0.05)


def test_bfloat16_inputs_compute_in_float32():
  rng = np.random.default_rng(11)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  low = jnp.asarray(scores, jnp.bfloat16)
  for method in ("softsort", "fast"):
    ranks = ops.soft_rank(low, method=method, temperature=SMOOTH)
    assert ranks.dtype == jnp.float32
    reference = ops.soft_rank(np.asarray(low, np.float32), method=method, temperature=SMOOTH)
    np.testing.assert_allclose(ranks, reference, atol=1e-5)
    grad = jax.grad(lambda s: ops.soft_rank(s, method=method, temperature=SMOOTH)[0, 0])(low)
    assert grad.dtype == jnp.bfloat16 and np.isfinite(np.asarray(grad, np.float32)).all()


def test_scale_invariant_option():
  rng = np.random.default_rng(12)
  scores = rng.normal(size=(BATCH, N)).astype(np.float32)
  for method in ("softsort", "fast"):
    kwargs = dict(method=method, temperature=SMOOTH, scale_invariant=True)
    base = ops.soft_rank(scores, **kwargs)
    shifted = ops.soft_rank(scores * 1000.0 + 7.0, **kwargs)
    np.testing.assert_allclose(base, shifted, atol=2e-3)
    # Soft-sorted values come back on the input's scale.
    values = ops.soft_sort(scores * 1000.0 + 7.0, **kwargs)
    np.testing.assert_allclose((values - 7.0) / 1000.0, ops.soft_sort(scores, **kwargs), atol=2e-3)
    # Evenly spaced scores: the temperature reads in neighbour gaps at any
    # scale, so lists spaced 1 and 1000 apart relax identically.
    even = (np.arange(N)[None] * np.array([[1.0], [1e3], [1e-2], [7.0]])).astype(np.float32)
    even_ranks = np.asarray(ops.soft_rank(even, **kwargs))
    np.testing.assert_allclose(even_ranks, np.broadcast_to(even_ranks[0], even.shape), atol=1e-3)


def test_straight_through_is_hard_forward_soft_backward():
  rng = np.random.default_rng(13)
  scores = jnp.asarray(rng.normal(size=(BATCH, N)).astype(np.float32))
  probe = jnp.asarray(rng.normal(size=(BATCH, N)).astype(np.float32))
  for method in ("softsort", "fast"):
    kwargs = dict(method=method, temperature=SMOOTH)
    st = ops.soft_rank(scores, straight_through=True, **kwargs)
    np.testing.assert_array_equal(st, ops.soft_rank(scores, method="hard"))
    grad_st = jax.grad(lambda s: jnp.sum(probe * ops.soft_rank(s, straight_through=True, **kwargs)))(scores)
    grad_soft = jax.grad(lambda s: jnp.sum(probe * ops.soft_rank(s, **kwargs)))(scores)
    np.testing.assert_allclose(grad_st, grad_soft, atol=1e-6)
    assert np.abs(np.asarray(grad_soft)).max() > 0
    mask = ops.soft_topk_mask(scores, K, straight_through=True, **kwargs)
    np.testing.assert_array_equal(mask, ops.soft_topk_mask(scores, K, method="hard"))


@pytest.mark.parametrize("method", SOFT_METHODS)
def test_jit_and_vmap_agree(method):
  rng = np.random.default_rng(14)
  scores = jnp.asarray(rng.normal(size=(BATCH, N)).astype(np.float32))
  fn = functools.partial(ops.soft_rank, method=method, temperature=SMOOTH)
  batched = np.asarray(fn(scores))
  per_row = np.stack([fn(row) for row in scores])
  np.testing.assert_allclose(per_row, batched, atol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(scores), batched, atol=1e-5)
  leading = scores.reshape(2, 2, N)
  np.testing.assert_allclose(jax.jit(fn)(leading).reshape(BATCH, N), batched, atol=1e-5)


def test_ot_coarse_targets():
  rng = np.random.default_rng(15)
  scores = _spaced_scores(rng, 2, 32)
  coarse = np.asarray(ops.soft_rank(scores, method="ot", temperature=1e-2, ot_num_targets=8))
  assert coarse.min() >= 1 - 1e-4 and coarse.max() <= 32 + 1e-4
  assert stats.spearmanr(coarse[0], _hard_ranks(scores)[0]).statistic > 0.95


@pytest.mark.slow
def test_ot_gradient_at_n256():
  """ott's default implicit gradient failed at n=256; the unrolled one is finite."""
  rng = np.random.default_rng(16)
  big = jnp.asarray(rng.normal(size=(2, 256)).astype(np.float32))
  grad = jax.jit(jax.grad(
      lambda s: jnp.sum(ops.soft_rank(s, method="ot", temperature=1.0,
                                      ot_max_iterations=100) ** 2)))(big)
  assert np.isfinite(np.asarray(grad)).all()


# --- bad input -----------------------------------------------------------------


def test_bad_static_arguments_raise():
  scores = jnp.zeros((2, 5))
  with pytest.raises(ValueError, match="temperature"):
    ops.soft_rank(scores, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    ops.soft_rank(scores, temperature=-1.0)
  with pytest.raises(ValueError, match="method"):
    ops.soft_rank(scores, method="bubble")
  with pytest.raises(ValueError, match="k must"):
    ops.soft_topk_mask(scores, 0)
  with pytest.raises(ValueError, match="k must"):
    ops.soft_topk_mask(scores, 6)
  with pytest.raises(ValueError, match="fast"):
    ops.soft_permutation(scores, method="fast")
  with pytest.raises(ValueError, match="normalise_iters"):
    ops.soft_permutation(scores, normalise_iters=-1)
  with pytest.raises(ValueError, match="temperature"):
    jax.jit(lambda s, t: ops.soft_rank(s, temperature=t))(scores, 0.5)


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for inner in (param if isinstance(param, (list, tuple)) else (param,)):
        inner = getattr(inner, "jaxpr", None)
        if inner is not None:
          yield from _all_eqns(getattr(inner, "jaxpr", inner))


@pytest.mark.parametrize("method", ("softsort", "neuralsort"))
def test_normalisation_is_one_scan_without_per_round_matrices(method):
  """Forward + backward: one scan of normalise_iters rounds, no [iters, n, n] buffer."""
  n, iters, batch = 48, 7, 3

  def loss(scores):
    return jnp.sum(ops.soft_rank(scores, method=method, temperature=0.1,
                                 normalise_iters=iters) * jnp.arange(n))

  jaxpr = jax.make_jaxpr(jax.grad(loss))(jnp.zeros((batch, n)))
  eqns = list(_all_eqns(jaxpr.jaxpr))
  scans = [e for e in eqns if e.primitive.name == "scan"]
  assert {e.params["length"] for e in scans} == {iters}
  assert len(scans) == 2  # the rounds forward, and their transpose
  for eqn in eqns:
    for var in eqn.outvars:
      shape = tuple(getattr(var.aval, "shape", ()))
      assert np.prod(shape) < iters * n * n, (eqn.primitive, shape)


@pytest.mark.parametrize("implementation", ("host", "pallas"))
def test_fast_rank_and_gradient_equal_the_loop_reference(implementation):
  """Soft ranks and their gradients through every PAV implementation, on hard inputs."""
  rng = np.random.default_rng(2)
  n = 24
  rows = np.stack([
      rng.normal(size=n), np.round(rng.normal(size=n)), np.arange(n, 0, -1.0),
      np.tile([0.0, 3.0, 1.0, 2.0], n // 4),
      np.concatenate([np.arange(n // 2, 0, -1.0), np.zeros(n // 2)])]).astype(np.float32)
  where = np.ones(rows.shape, bool)
  where[0, -5:] = False
  probe = jnp.asarray(rng.normal(size=rows.shape).astype(np.float32))

  for temperature in (1.0, 0.1):
    def loss(scores, impl):
      return jnp.sum(probe * ops.soft_rank(scores, temperature=temperature, where=where,
                                           pav_implementation=impl))

    fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    want_value, want_grad = fn(jnp.asarray(rows), "loop")
    got_value, got_grad = fn(jnp.asarray(rows), implementation)
    scale = np.abs(rows / temperature).max()
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-5 * scale)


def test_fast_bfloat16_matches_float32():
  rng = np.random.default_rng(4)
  scores = rng.normal(size=(4, 40)).astype(np.float32)
  want = ops.soft_rank(jnp.asarray(scores), temperature=0.3)
  got = ops.soft_rank(jnp.asarray(scores, jnp.bfloat16), temperature=0.3)
  assert got.dtype == jnp.float32
  # Only the inputs' rounding to bfloat16 (8 bits of mantissa) differs.
  np.testing.assert_allclose(got, want, atol=0.05 * 40 / 0.3 * 2**-8 * 4)
