"""PAV isotonic regression and permutahedron projection against scipy references."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from hgrank_jax.ops import isotonic
from hgrank_jax.ops import pav_blocks


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


# --- the three ways of finding PAV's blocks ------------------------------------


def _families(n, rng):
  """Rows of the inputs the fast sort really meets, each with its barrier."""
  half = n // 2
  rows = {
      "random": rng.normal(size=n),
      "ties": np.round(rng.normal(size=n)),
      # z - w for strictly decreasing scores at tau = 1: all exactly equal, so
      # no block may pool (equal means stay apart).
      "strictly_decreasing": np.arange(n, 0, -1.0) - np.arange(n, 0, -1.0),
      "increasing": np.arange(n, dtype=np.float64),
      "sawtooth": np.tile([0.0, 3.0, 1.0, 2.0], n)[:n],
      # n/2 distinct scores then n/2 tied ones, as z - w: the tail pools into
      # one block of n/2 (the worst case for round-based parallel pooling).
      "tied_tail": np.concatenate([np.arange(half, 0, -1.0) * 3, np.zeros(n - half)])
                   - np.arange(n, 0, -1.0),
  }
  y = np.stack(list(rows.values())).astype(np.float32)
  barrier = np.zeros(y.shape, bool)
  barrier = np.concatenate([barrier, rng.random(y.shape) < 0.2])
  barrier[-2, n - 3:] = True  # padding-like suffix
  return np.concatenate([y, y]), barrier


@pytest.mark.parametrize("n", (2, 7, 33))
def test_implementations_find_the_same_blocks(n):
  rng = np.random.default_rng(n)
  y, barrier = _families(n, rng)
  y, barrier = jnp.asarray(y), jnp.asarray(barrier)
  loop = np.asarray(jax.jit(pav_blocks.starts_loop)(y, barrier))
  host = pav_blocks.host_starts(np.asarray(y), np.asarray(barrier))
  pallas = np.asarray(jax.jit(functools.partial(
      pav_blocks.starts_pallas, interpret=jax.default_backend() != "gpu"))(y, barrier))
  np.testing.assert_array_equal(host, loop)
  np.testing.assert_array_equal(pallas, loop)


def test_host_tie_rule_matches_loop_exhaustively():
  """Every row over {0, 1, 2, 3} of length <= 6: scipy's pooled blocks re-split as PAV would."""
  for n in range(2, 7):
    y = np.array(list(itertools.product(range(4), repeat=n)), np.float32)
    barrier = np.zeros(y.shape, bool)
    want = np.asarray(jax.jit(pav_blocks.starts_loop)(jnp.asarray(y), jnp.asarray(barrier)))
    np.testing.assert_array_equal(pav_blocks.host_starts(y, barrier), want)


@pytest.mark.parametrize("implementation", ("host", "pallas"))
def test_implementations_agree_in_values_and_gradients(implementation):
  rng = np.random.default_rng(5)
  n = 17
  y, barrier = _families(n, rng)
  z = jnp.asarray(np.sort(y, axis=-1)[:, ::-1] * 4.0)
  w = jnp.asarray(np.broadcast_to(np.arange(n, 0, -1.0, dtype=np.float32), z.shape))
  probe = jnp.asarray(rng.normal(size=z.shape).astype(np.float32))

  def objective(z, w, implementation):
    return jnp.sum(probe * isotonic.project_sorted_permutahedron(
        z, w, jnp.asarray(barrier), implementation=implementation))

  value_and_grad = jax.value_and_grad(objective, argnums=(0, 1))
  want_value, want_grads = jax.jit(value_and_grad, static_argnums=2)(z, w, "loop")
  got_value, got_grads = jax.jit(value_and_grad, static_argnums=2)(z, w, implementation)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-6)
  for got, want in zip(got_grads, want_grads):
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_gpu_program_has_no_xla_loop():
  """Lowered for a GPU, the fast soft rank is loop-free XLA around one Pallas kernel."""
  from hgrank_jax import ops  # pylint: disable=g-import-not-at-top

  def loss(scores):
    return jnp.sum(ops.soft_rank(scores, temperature=0.1) * jnp.arange(64.0))

  scores = jnp.zeros((4, 64))
  if jax.default_backend() == "gpu":
    # On a GPU machine JAX lowers Pallas for the device it has: inspect the
    # compiled program instead.
    compiled = jax.jit(jax.grad(loss)).lower(scores).compile().as_text()
    assert " while(" not in compiled
    return
  gpu = jax.jit(jax.grad(loss)).trace(scores).lower(lowering_platforms=("cuda",)).as_text()
  assert "stablehlo.while" not in gpu
  assert "triton" in gpu  # the PAV kernel
  cpu = jax.jit(jax.grad(loss)).trace(scores).lower(lowering_platforms=("cpu",)).as_text()
  assert "stablehlo.while" not in cpu and "callback" in cpu  # scipy's PAV on the host
  loop = jax.jit(jax.grad(lambda s: jnp.sum(ops.soft_rank(
      s, temperature=0.1, pav_implementation="loop")))).lower(scores).as_text()
  assert "stablehlo.while" in loop  # the reference really is a loop


def test_implementation_is_validated():
  with pytest.raises(ValueError, match="implementation"):
    isotonic.isotonic_decreasing(jnp.ones(3), implementation="gpu")


def test_fast_rank_inside_shard_map_and_on_sharded_input():
  """The host callbacks run per shard under shard_map and on sharded jit inputs."""
  from hgrank_jax import ops  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  mesh = Mesh(np.array(devices), ("data",))
  rng = np.random.default_rng(8)
  scores = jnp.asarray(rng.normal(size=(2 * len(devices), 9)).astype(np.float32))
  want = ops.soft_rank(scores, temperature=0.2)
  per_shard = jax.jit(jax.shard_map(
      lambda s: ops.soft_rank(s, temperature=0.2), mesh=mesh,
      in_specs=PartitionSpec("data"), out_specs=PartitionSpec("data")))(scores)
  np.testing.assert_allclose(per_shard, want, atol=1e-6)
  sharded = jax.device_put(scores, NamedSharding(mesh, PartitionSpec("data")))
  np.testing.assert_allclose(jax.jit(lambda s: ops.soft_rank(s, temperature=0.2))(sharded),
                             want, atol=1e-6)
