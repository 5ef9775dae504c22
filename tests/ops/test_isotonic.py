"""PAV isotonic regression and permutahedron projection against scipy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from hgrank_jax.ops import isotonic


def _scipy_isotonic_decreasing(y, barrier):
  """Fits each barrier-delimited run separately with scipy."""
  out = np.empty_like(y, dtype=np.float64)
  starts = [0] + [j for j in range(1, len(y)) if barrier[j]] + [len(y)]
  for lo, hi in zip(starts[:-1], starts[1:]):
    out[lo:hi] = optimize.isotonic_regression(y[lo:hi], increasing=False).x
  return out


def _permutahedron_projection_qp(z, w):
  """Brute force: minimise ||x - z||^2 over the permutahedron of w by SLSQP.

  Uses the subset description x(S) <= sum of the |S| largest w for every
  subset S, with equality for the full set (Rado's theorem), so it shares
  nothing with the isotonic-regression route.
  """
  n = len(z)
  w_desc = np.sort(w)[::-1]
  constraints = [{"type": "eq", "fun": lambda x: x.sum() - w.sum()}]
  for size in range(1, n):
    bound = w_desc[:size].sum()
    for subset in itertools.combinations(range(n), size):
      idx = list(subset)
      constraints.append(
          {"type": "ineq", "fun": lambda x, idx=idx, b=bound: b - x[idx].sum()})
  result = optimize.minimize(lambda x: 0.5 * np.sum((x - z) ** 2), x0=w.copy(),
                             jac=lambda x: x - z, constraints=constraints,
                             method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
  return result.x


@pytest.mark.parametrize("seed", range(3))
def test_pav_matches_scipy(seed):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=(40, 23)).astype(np.float32)
  y[:5] = np.round(y[:5])  # many exact ties
  got = np.asarray(jax.jit(isotonic.isotonic_decreasing)(jnp.asarray(y)))
  want = np.stack([_scipy_isotonic_decreasing(row, np.zeros(23, bool)) for row in y])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_pav_barriers_split_runs():
  rng = np.random.default_rng(7)
  y = rng.normal(size=(30, 16)).astype(np.float32)
  barrier = rng.random((30, 16)) < 0.25
  got = np.asarray(jax.jit(isotonic.isotonic_decreasing)(
      jnp.asarray(y), jnp.asarray(barrier)))
  want = np.stack([_scipy_isotonic_decreasing(r, b) for r, b in zip(y, barrier)])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_pav_length_one_and_leading_axes():
  y = jnp.arange(24.0).reshape(2, 3, 4)
  out = jax.jit(isotonic.isotonic_decreasing)(y)
  assert out.shape == (2, 3, 4)
  # An increasing row pools into its mean.
  np.testing.assert_allclose(out, jnp.broadcast_to(y.mean(-1, keepdims=True), y.shape))
  np.testing.assert_allclose(isotonic.isotonic_decreasing(jnp.array([3.0])), [3.0])


@pytest.mark.parametrize("seed", range(4))
def test_projection_matches_brute_force_qp(seed):
  rng = np.random.default_rng(seed)
  n = 5
  z = np.sort(rng.normal(size=n) * 2)[::-1]
  w = np.sort(rng.normal(size=n))[::-1]
  got = np.asarray(jax.jit(isotonic.project_sorted_permutahedron)(
      jnp.asarray(z, jnp.float32), jnp.asarray(w, jnp.float32)))
  np.testing.assert_allclose(got, _permutahedron_projection_qp(z, w), atol=1e-4)


def test_projection_vjp_matches_finite_differences():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    z = jnp.asarray(np.sort(rng.normal(size=9))[::-1] * 3)
    w = jnp.asarray(np.sort(rng.normal(size=9))[::-1])
    barrier = jnp.asarray(np.arange(9) == 6)
    probe = jnp.asarray(rng.normal(size=9))

    @jax.jit
    def objective(z, w):
      return jnp.dot(probe, isotonic.project_sorted_permutahedron(z, w, barrier))

    grad_z, grad_w = jax.jit(jax.grad(objective, argnums=(0, 1)))(z, w)
    step = 1e-6
    # All perturbed inputs in one batched call: rows of (z, w) pairs.
    deltas = step * jnp.eye(9)
    batched = jax.vmap(objective)
    numeric_z = (batched(z + deltas, jnp.broadcast_to(w, (9, 9)))
                 - batched(z - deltas, jnp.broadcast_to(w, (9, 9)))) / (2 * step)
    numeric_w = (batched(jnp.broadcast_to(z, (9, 9)), w + deltas)
                 - batched(jnp.broadcast_to(z, (9, 9)), w - deltas)) / (2 * step)
    np.testing.assert_allclose(grad_z, numeric_z, atol=1e-6)
    np.testing.assert_allclose(grad_w, numeric_w, atol=1e-6)


def test_no_quadratic_intermediate():
  """Forward and backward never build an array with n^2 elements."""
  n = 300

  def loss(z):
    return isotonic.project_sorted_permutahedron(z, jnp.arange(n, 0, -1.0)).sum()

  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(jnp.zeros((2, n)))
  sizes = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        sizes.append(int(np.prod(getattr(var.aval, "shape", ()))))
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", None)
        if inner is not None:
          visit(getattr(inner, "jaxpr", inner))

  visit(jaxpr.jaxpr)
  assert max(sizes) < n * n


def test_jit_and_vmap_agree():
  rng = np.random.default_rng(11)
  y = jnp.asarray(rng.normal(size=(6, 12)).astype(np.float32))
  jitted = jax.jit(isotonic.isotonic_decreasing)
  per_row = np.stack([jitted(row) for row in y])
  np.testing.assert_allclose(jitted(y), per_row, atol=1e-6)
  np.testing.assert_allclose(
      jax.jit(jax.vmap(isotonic.isotonic_decreasing))(y), per_row, atol=1e-6)
