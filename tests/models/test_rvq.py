"""Tests of ResidualVQ against numpy references: cascade, EMA step, expiry, STE, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.models import RVQ_COLLECTION, ResidualVQ, prefix_group_ids


def numpy_cascade(x, codebooks):
  """Eq. 5-6 directly: argmin of explicit squared distances, level by level."""
  residual = np.asarray(x, np.float64)
  codes = []
  for book in np.asarray(codebooks, np.float64):
    dist = ((residual[:, None, :] - book[None, :, :])**2).sum(-1)
    code = dist.argmin(-1)
    codes.append(code)
    residual = residual - book[code]
  return np.stack(codes, -1), np.asarray(x, np.float64) - residual


_JITTED = {}


def run(module, variables, x, where=None, mutable=False):
  """module.apply under jit, compiled once per module (far cheaper than op-by-op dispatch)."""
  key = (id(module), mutable)
  if key not in _JITTED:
    collections = [RVQ_COLLECTION] if mutable else False
    _JITTED[key] = (module, jax.jit(
        lambda v, x, w: module.apply(v, x, where=w, mutable=collections)))
  return _JITTED[key][1](variables, x, where)


def init(module, x):
  """The module's variables with the documented initial state, built without compiling init.

  Tracing init under eval_shape gives the shapes; the values follow ResidualVQ's
  documented start (random codebook, count 1, S = C). One test checks the real init.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)[RVQ_COLLECTION]
  book = np.random.default_rng(1).normal(size=shapes["codebook"].shape).astype(np.float32)
  return {RVQ_COLLECTION: {
      "codebook": jnp.asarray(book), "ema_count": jnp.ones(shapes["ema_count"].shape),
      "ema_sum": jnp.asarray(book), "initialized": jnp.array(False),
      "step": jnp.array(0, jnp.int32)}}


def test_real_init_matches_documented_initial_state():
  module = ResidualVQ(num_levels=2, codebook_size=3, init_scale=0.5)
  x = jnp.ones((4, 5))
  state = jax.jit(module.init)(jax.random.key(0), x)[RVQ_COLLECTION]
  assert state["codebook"].shape == (2, 3, 5)
  np.testing.assert_array_equal(state["ema_count"], np.ones((2, 3)))
  np.testing.assert_array_equal(state["ema_sum"], state["codebook"])
  assert not bool(state["initialized"]) and int(state["step"]) == 0
  assert 0.1 < float(jnp.std(state["codebook"])) < 1.0


def with_state(variables, **state):
  """Replaces entries of the rvq collection with the given arrays."""
  new = dict(variables[RVQ_COLLECTION])
  new.update({k: jnp.asarray(v) for k, v in state.items()})
  return {RVQ_COLLECTION: new}


def test_codes_equal_numpy_residual_cascade():
  module = ResidualVQ(num_levels=3, codebook_size=5, kmeans_init=False)
  x = jnp.asarray(np.random.default_rng(10).normal(size=(4, 6, 7)), jnp.float32)
  variables = init(module, x)
  books = np.random.default_rng(0).normal(size=(3, 5, 7)) * np.array([1.0, 0.5, 0.25])[:, None, None]
  variables = with_state(variables, codebook=books.astype(np.float32))
  out = run(module, variables, x)
  ref_codes, ref_recon = numpy_cascade(np.asarray(x).reshape(-1, 7), books)
  assert out.codes.shape == (4, 6, 3) and out.codes.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1, 3), ref_codes)
  np.testing.assert_allclose(np.asarray(out.quantized).reshape(-1, 7), ref_recon, atol=1e-5)


def test_one_ema_step_matches_hand_computation():
  module = ResidualVQ(num_levels=1, codebook_size=3, decay=0.9, eps=0.1,
                      dead_code_threshold=0.0, kmeans_init=False)
  x = jnp.array([[0.1, 0.0], [0.3, 0.2], [2.0, 2.2], [9.0, 9.0]], jnp.float32)
  where = jnp.array([True, True, True, False])
  variables = init(module, x)
  codebook = np.array([[[0.0, 0.0], [2.0, 2.0], [-5.0, 5.0]]], np.float32)
  counts = np.array([[4.0, 2.0, 1.0]], np.float32)
  sums = np.array([[[0.4, 0.0], [4.0, 4.0], [-5.0, 5.0]]], np.float32)
  variables = with_state(variables, codebook=codebook, ema_count=counts, ema_sum=sums)
  out, new = run(module, variables, x, where, mutable=True)
  state = new[RVQ_COLLECTION]
  # Rows 0, 1 -> code 0, row 2 -> code 1, row 3 is masked (it would pick code 1).
  np.testing.assert_array_equal(out.codes[:, 0], [0, 0, 1, 1])
  # N = 0.9 N + 0.1 n with n = (2, 1, 0).
  expected_counts = np.array([0.9 * 4 + 0.1 * 2, 0.9 * 2 + 0.1 * 1, 0.9 * 1])
  # S = 0.9 S + 0.1 * (sum of assigned valid rows).
  expected_sums = np.array([[0.9 * 0.4 + 0.1 * 0.4, 0.1 * 0.2],
                            [0.9 * 4.0 + 0.1 * 2.0, 0.9 * 4.0 + 0.1 * 2.2],
                            [0.9 * -5.0, 0.9 * 5.0]])
  total = expected_counts.sum()  # 3.8 + 1.9 + 0.9 = 6.6
  smoothed = (expected_counts + 0.1) / (total + 3 * 0.1) * total
  np.testing.assert_allclose(expected_counts, [3.8, 1.9, 0.9])
  np.testing.assert_allclose(state["ema_count"][0], expected_counts, rtol=1e-6)
  np.testing.assert_allclose(state["ema_sum"][0], expected_sums, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(state["codebook"][0], expected_sums / smoothed[:, None], rtol=1e-5)
  assert int(state["step"]) == 1
  # The returned quantised vector uses the codebook from before the update.
  np.testing.assert_allclose(out.quantized[:3], codebook[0][[0, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("behind_cond", [True, False])  # CPU default; accelerator default
def test_dead_codes_are_reseeded_from_batch_with_consistent_statistics(behind_cond):
  module = ResidualVQ(num_levels=2, codebook_size=4, decay=0.5, dead_code_threshold=1.0,
                      dead_code_reset_count=2.0, kmeans_init=False,
                      reseed_behind_cond=behind_cond)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 3)).astype(np.float32)
  where = np.ones(12, bool)
  where[[3, 7]] = False
  x[[3, 7]] = 100.0  # masked outliers: a re-seeded code must never come from them
  variables = init(module, jnp.asarray(x))
  books = np.zeros((2, 4, 3), np.float32)
  books[:, 0] = 0.0
  books[:, 1:] = 50.0 + np.arange(3)[None, :, None]  # far away: never picked
  counts = np.full((2, 4), 10.0, np.float32)
  counts[:, 1] = 1.5  # 0.5 * 1.5 = 0.75 < 1 after this step: dead
  counts[:, 2] = 3.0  # 1.5 after this step: alive, only decays
  counts[:, 3] = 0.1  # dead
  variables = with_state(variables, codebook=books, ema_count=counts, ema_sum=books * counts[..., None])
  out, new = run(module, variables, jnp.asarray(x), jnp.asarray(where), mutable=True)
  state = jax.tree.map(np.asarray, new[RVQ_COLLECTION])
  # Every valid row picks code 0 at both levels (masked outliers may pick others).
  np.testing.assert_array_equal(np.asarray(out.codes)[where], 0)
  np.testing.assert_allclose(out.stats["dead_fraction"], [0.5, 0.5])
  # Level residuals: level 0 quantises x, level 1 quantises x - C^0_0 = x.
  valid_rows = x[where]
  for level in range(2):
    for code in (1, 3):
      new_code = state["codebook"][level, code]
      distances = np.abs(valid_rows - new_code).max(-1)
      assert distances.min() < 1e-6, "a dead code must become a valid residual of this batch"
      assert state["ema_count"][level, code] == 2.0
      np.testing.assert_allclose(state["ema_sum"][level, code], 2.0 * new_code, rtol=1e-6)
    # Two dead codes at one level get distinct residuals.
    assert np.abs(state["codebook"][level, 1] - state["codebook"][level, 3]).max() > 1e-3
    # Code 2 survives with a decayed count and unchanged direction.
    np.testing.assert_allclose(state["ema_count"][level, 2], 1.5)
    np.testing.assert_allclose(state["ema_sum"][level, 2], 0.5 * 3.0 * books[level, 2], rtol=1e-6)
  # The code every row used follows the EMA of the valid rows' sum.
  np.testing.assert_allclose(state["ema_count"][0, 0], 0.5 * 10 + 0.5 * 10)
  np.testing.assert_allclose(state["ema_sum"][0, 0], 0.5 * valid_rows.sum(0), rtol=1e-5, atol=1e-6)


def test_straight_through_jacobian_is_identity():
  module = ResidualVQ(num_levels=2, codebook_size=3)
  x = jnp.asarray(np.random.default_rng(11).normal(size=(5, 4)), jnp.float32)
  variables = init(module, x)
  fn = lambda row: module.apply(variables, row[None])[0][0]
  quantized, reverse, forward = jax.jit(
      lambda x: (module.apply(variables, x).quantized, jax.vmap(jax.jacrev(fn))(x),
                 jax.vmap(jax.jacfwd(fn))(x)))(x)
  identity = np.broadcast_to(np.eye(4), (5, 4, 4))
  np.testing.assert_allclose(reverse, identity, atol=1e-7)
  np.testing.assert_allclose(forward, identity, atol=1e-7)
  # The forward value is the quantised vector (the codebook reconstruction), not x.
  _, reconstruction = numpy_cascade(np.asarray(x), variables[RVQ_COLLECTION]["codebook"])
  np.testing.assert_allclose(quantized, reconstruction, atol=1e-5)
  assert np.abs(np.asarray(quantized - x)).max() > 1e-3


@pytest.mark.parametrize("dead_count", [0.1, 10.0])  # a dead code at every level; none
def test_reseeding_on_every_step_equals_reseeding_behind_a_cond(dead_count):
  x = jnp.asarray(np.random.default_rng(4).normal(size=(16, 3)), jnp.float32)
  where = jnp.asarray(np.arange(16) % 5 != 0)
  states = []
  for behind_cond in (True, False):
    module = ResidualVQ(num_levels=2, codebook_size=3, decay=0.5, kmeans_init=False,
                        reseed_behind_cond=behind_cond)
    variables = init(module, x)
    books = np.array(variables[RVQ_COLLECTION]["codebook"])
    books[:, 2] = 100.0  # far away: no row picks code 2, so only its count decides
    counts = np.full((2, 3), 10.0, np.float32)
    counts[:, 2] = dead_count
    variables = with_state(variables, codebook=books, ema_count=counts,
                           ema_sum=books * counts[..., None])
    out, new = run(module, variables, x, where, mutable=True)
    states.append((jax.tree.map(np.asarray, new[RVQ_COLLECTION]), np.asarray(out.codes)))
  reseeded = np.abs(states[0][0]["codebook"][:, 2]).max() < 50
  assert reseeded == (dead_count < 1)
  jax.tree.map(np.testing.assert_array_equal, states[0], states[1])


def test_masked_rows_do_not_update_codebooks():
  module = ResidualVQ(num_levels=2, codebook_size=3, dead_code_threshold=0.0, kmeans_init=False)
  x = jnp.asarray(np.random.default_rng(12).normal(size=(9, 4)), jnp.float32)
  where = jnp.array([1, 1, 0, 1, 0, 1, 1, 1, 0], bool)
  variables = init(module, x)
  _, masked = run(module, variables, x, where, mutable=True)
  # Same rows, but the masked ones hold huge values: nothing may change.
  garbage = jnp.where(where[:, None], x, 1e3)
  _, masked_garbage = run(module, variables, garbage, where, mutable=True)
  for key in ("codebook", "ema_count", "ema_sum"):
    np.testing.assert_allclose(masked_garbage[RVQ_COLLECTION][key], masked[RVQ_COLLECTION][key],
                               rtol=1e-6)
  # Counts grow only by the valid rows: sum N = m * K + (1 - m) * (number of valid rows) per level.
  np.testing.assert_allclose(masked[RVQ_COLLECTION]["ema_count"].sum(-1),
                             0.99 * 3 + 0.01 * int(where.sum()), rtol=1e-6)


def test_kmeans_init_finds_separated_clusters():
  rng = np.random.default_rng(3)
  centers = np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
  labels = np.repeat(np.arange(4), 16)
  x = (centers[labels] + 0.1 * rng.normal(size=(64, 2))).astype(np.float32)
  module = ResidualVQ(num_levels=1, codebook_size=4, kmeans_init=True, kmeans_iters=10)
  variables = init(module, jnp.asarray(x))
  assert not bool(variables[RVQ_COLLECTION]["initialized"])
  step = lambda v, x, where=np.ones(64, bool): run(module, v, jnp.asarray(x), jnp.asarray(where),
                                                   mutable=True)
  # A fully padded first batch cannot seed k-means: it waits for real rows.
  _, padded = step(variables, x, np.zeros(64, bool))
  assert not bool(padded[RVQ_COLLECTION]["initialized"])
  out, new = step(variables, x)
  assert bool(new[RVQ_COLLECTION]["initialized"])
  codes = np.asarray(out.codes[:, 0])
  # One code per cluster, i.e. the code partition equals the true one.
  assert len(set(codes)) == 4
  for label in range(4):
    assert len(set(codes[labels == label])) == 1
  np.testing.assert_allclose(out.stats["perplexity"], [4.0], rtol=1e-5)
  book = np.asarray(new[RVQ_COLLECTION]["codebook"][0])
  for label in range(4):
    mean = x[labels == label].mean(0)
    assert np.abs(book[codes[labels == label][0]] - mean).max() < 1e-2
  # A second step does not re-run k-means: codes stay and statistics keep averaging.
  out2, new2 = step(new, x)
  np.testing.assert_array_equal(out2.codes, out.codes)
  assert int(new2[RVQ_COLLECTION]["step"]) == 2


def test_statistics_match_numpy():
  module = ResidualVQ(num_levels=3, codebook_size=3, kmeans_init=False, dead_code_threshold=0.0)
  rng = np.random.default_rng(13)
  x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
  where = jnp.asarray(rng.random(40) < 0.8)
  variables = init(module, x)
  out = run(module, variables, x, where)
  codes, valid = np.asarray(out.codes), np.asarray(where)
  for level in range(3):
    prefixes = {tuple(row) for row in codes[valid, :level + 1]}
    assert int(out.stats["occupied_prefixes"][level]) == len(prefixes)
    np.testing.assert_allclose(out.stats["mean_group_size"][level], valid.sum() / len(prefixes),
                               rtol=1e-6)
    p = np.bincount(codes[valid, level], minlength=3) / valid.sum()
    p = p[p > 0]
    np.testing.assert_allclose(out.stats["perplexity"][level], np.exp(-(p * np.log(p)).sum()),
                               rtol=1e-5)
  _, ref_recon = numpy_cascade(np.asarray(x), variables[RVQ_COLLECTION]["codebook"])
  err = ((np.asarray(x) - ref_recon)**2).sum(-1)[valid].mean()
  np.testing.assert_allclose(out.stats["residual_sq_norm"][-1], err, rtol=1e-4)


def test_prefix_group_ids_match_numpy_unique():
  rng = np.random.default_rng(2)
  codes = rng.integers(0, 3, size=(50, 3))
  valid = rng.random(50) < 0.7
  ids, occupied = jax.jit(prefix_group_ids, static_argnums=2)(jnp.asarray(codes), jnp.asarray(valid), 3)
  ids = np.asarray(ids)
  for level in range(3):
    prefixes = [tuple(row) for row in codes[:, :level + 1]]
    assert occupied[level] == len({p for p, v in zip(prefixes, valid) if v})
    for i in np.flatnonzero(valid):
      for j in np.flatnonzero(valid):
        assert (ids[i, level] == ids[j, level]) == (prefixes[i] == prefixes[j])


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="num_levels"):
    ResidualVQ(num_levels=0, codebook_size=4)
  with pytest.raises(ValueError, match="codebook_size"):
    ResidualVQ(num_levels=2, codebook_size=0)
  with pytest.raises(ValueError, match="decay"):
    ResidualVQ(num_levels=2, codebook_size=4, decay=1.0)
  module = ResidualVQ(num_levels=2, codebook_size=4)
  x = jnp.ones((6, 3))
  variables = init(module, x)
  with pytest.raises(ValueError, match="where"):
    module.apply(variables, x, where=jnp.ones((5,), bool))
  with pytest.raises(ValueError, match="mutable"):
    module.apply(variables, x, update=True)
  with pytest.raises(ValueError, match="width"):
    module.apply(variables, jnp.ones((6, 5)))


def test_update_under_data_parallel_sharding_equals_single_device():
  """With the batch split over 8 devices, counts and sums are still whole-batch statistics."""
  devices = np.array(jax.devices())
  if devices.size < 2:
    pytest.skip("needs several devices (tests/conftest.py sets 8 CPU devices)")
  mesh = jax.sharding.Mesh(devices, ("data",))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  module = ResidualVQ(num_levels=2, codebook_size=3, dead_code_threshold=0.0, kmeans_init=False)
  rng = np.random.default_rng(14)
  x = jnp.asarray(rng.normal(size=(2 * devices.size, 4)), jnp.float32)
  where = jnp.asarray(rng.random(2 * devices.size) < 0.75)
  variables = init(module, x)
  step = jax.jit(lambda v, x, w: module.apply(v, x, where=w, mutable=[RVQ_COLLECTION]))
  single_out, single = step(variables, x, where)
  sharded_out, sharded = step(variables, jax.device_put(x, rows), jax.device_put(where, rows))
  np.testing.assert_array_equal(sharded_out.codes, single_out.codes)
  for key in ("codebook", "ema_count", "ema_sum"):
    np.testing.assert_allclose(sharded[RVQ_COLLECTION][key], single[RVQ_COLLECTION][key],
                               rtol=1e-5, atol=1e-6)
