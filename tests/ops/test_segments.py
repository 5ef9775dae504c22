"""Tests for hgrank_jax.ops.segments against numpy group-by references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp

from hgrank_jax.ops import segments as seg


def _np_prefix_ids(codes, valid, outer=None):
  """Reference: rank of each row's key tuple among the sorted distinct keys."""
  n, num_levels = codes.shape
  outer = np.zeros((n, 0), int) if outer is None else outer.reshape(n, -1)
  all_ids = np.full((num_levels, n), n)
  counts = []
  for level in range(1, num_levels + 1):
    keys = [tuple(outer[i]) + tuple(codes[i, :level]) for i in range(n)]
    distinct = sorted({keys[i] for i in range(n) if valid[i]})
    rank = {k: r for r, k in enumerate(distinct)}
    for i in range(n):
      if valid[i]:
        all_ids[level - 1, i] = rank[keys[i]]
    counts.append(len(distinct))
  return all_ids, np.array(counts)


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_segment_ids_match_numpy(seed):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, 3, size=(40, 3))
  valid = rng.random(40) > 0.2
  outer = rng.integers(0, 2, size=40)
  ids, counts = seg.prefix_segment_ids(codes, where=valid, outer_keys=outer)
  want_ids, want_counts = _np_prefix_ids(codes, valid, outer)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(counts, want_counts)


def test_prefix_segment_ids_never_materialise_key_space():
  # Codes near 2**30 would need an astronomically large table if groups were
  # indexed by K**L; sorting handles them at O(n) memory.
  codes = np.array([[2**30, 5], [2**30, 5], [7, 2**30 - 1], [2**30, 6]])
  ids, counts = seg.prefix_segment_ids(codes)
  np.testing.assert_array_equal(ids, [[1, 1, 0, 1], [1, 1, 0, 2]])
  np.testing.assert_array_equal(counts, [2, 3])



@pytest.mark.parametrize("spread", ["packed", "lexsort"])
def test_prefix_segment_ids_both_sort_paths_match_numpy(spread):
  # Narrow key ranges are packed into one int32 sort key; ranges needing more
  # than 30 bits together (including ones whose int32 difference overflows)
  # take the multi-key lexsort. Both must give the reference ids.
  rng = np.random.default_rng(7)
  n = 300
  if spread == "packed":
    codes = rng.integers(-4, 12, size=(n, 4))
    outer = rng.integers(0, 3, size=n)
  else:
    codes = rng.choice(np.array([-2**31, -5, 0, 3, 2**31 - 1]), size=(n, 3))
    outer = rng.choice(np.array([-2**30, 2**30]), size=n)
  valid = rng.random(n) > 0.1
  ids, counts = seg.prefix_segment_ids(codes, where=valid, outer_keys=outer)
  want_ids, want_counts = _np_prefix_ids(codes, valid, outer)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(counts, want_counts)


@pytest.mark.parametrize("codebook_size,num_levels", [(4, 3), (40, 3)])  # table; sort fallback
def test_code_prefix_ids_equal_sorted_ids(codebook_size, num_levels):
  rng = np.random.default_rng(11)
  n, num_lists = 500, 3
  codes = rng.integers(0, codebook_size, size=(n, num_levels))
  codes[:, 1] = np.minimum(codes[:, 1], 1)  # leave prefixes unoccupied
  valid = rng.random(n) > 0.15
  lists = rng.integers(0, num_lists, size=n)
  want_ids, want_counts = _np_prefix_ids(codes, valid, lists)
  ids, counts = seg.code_prefix_ids(codes, codebook_size=codebook_size, where=valid,
                                    list_ids=lists, num_lists=num_lists)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(counts, want_counts)


@pytest.mark.parametrize("case", ["small", "ties", "all_masked", "wide"])
def test_table_ids_equal_sorted_ids(case):
  # Small key ranges are counted into a table (no sort); wide ones fall back to
  # the sort. Whichever path runs, ids equal the sorted path's and the reference.
  rng = np.random.default_rng(5)
  n = 400
  codes = rng.integers(-3, 4, size=(n, 2))
  outer = rng.integers(0, 5, size=n)
  valid = rng.random(n) > 0.25
  if case == "ties":
    codes[:] = codes[0]  # every row the same key
  elif case == "all_masked":
    valid[:] = False
  elif case == "wide":
    codes[:, 1] = rng.integers(-2**30, 2**30, size=n)  # packed range far above 2n
  want_ids, want_counts = _np_prefix_ids(codes, valid, outer)
  for method in ("auto", "sort"):
    ids, counts = seg.prefix_segment_ids(codes, where=valid, outer_keys=outer, method=method)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(counts, want_counts)
  ids, count = seg.dense_segment_ids(np.stack([outer, codes[:, 0]], 1), where=valid)
  np.testing.assert_array_equal(ids, _np_prefix_ids(codes[:, :1], valid, outer)[0][0])


@pytest.mark.parametrize("spread", [16, 100_000])  # list * S + segment; sort fallback
def test_packed_segment_ids_group_rows_like_dense_ids(spread):
  rng = np.random.default_rng(9)
  n, num_lists = 512, 8
  lists = np.repeat(np.arange(num_lists), n // num_lists)
  segments = rng.integers(0, spread, size=n)
  valid = rng.random(n) > 0.2
  keys = np.stack([lists, segments], 1)
  ids, bound = seg.packed_segment_ids(keys, where=valid)
  ids = np.asarray(ids)
  assert bound == seg.TABLE_FACTOR * n
  np.testing.assert_array_equal(ids[~valid], bound)
  assert ids[valid].min() >= 0 and ids[valid].max() < bound
  if spread == 16:  # small keys: the packing itself, no renumbering
    low = segments[valid].min()
    np.testing.assert_array_equal(ids[valid], (lists * (segments[valid].max() - low + 1)
                                               + segments - low)[valid])
  # Same partition of the valid rows as the dense ids: a bijection between them.
  dense = np.asarray(seg.dense_segment_ids(keys, where=valid)[0])[valid]
  pairs = set(zip(ids[valid].tolist(), dense.tolist()))
  assert len(pairs) == len(set(dense.tolist())) == len(set(ids[valid].tolist()))


def test_dense_segment_ids_match_unique_inverse():
  rng = np.random.default_rng(3)
  keys = rng.integers(-5, 1000, size=64)
  ids, count = seg.dense_segment_ids(keys)
  uniques, inverse = np.unique(keys, return_inverse=True)
  np.testing.assert_array_equal(ids, inverse)
  assert int(count) == len(uniques)


def test_dense_segment_ids_jit_and_mask():
  keys = jnp.array([4, 4, 9, 1, 9])
  valid = jnp.array([True, False, True, True, True])
  ids, count = jax.jit(lambda k, w: seg.dense_segment_ids(k, where=w))(keys,
                                                                        valid)
  np.testing.assert_array_equal(ids, [1, 5, 2, 0, 2])
  assert int(count) == 3


def _random_segments(seed, n=50, num_segments=8):
  rng = np.random.default_rng(seed)
  values = rng.normal(size=n).astype(np.float32)
  ids = rng.integers(0, num_segments - 2, size=n)  # last two stay empty
  valid = rng.random(n) > 0.3
  return values, ids, valid


def test_segment_reductions_match_numpy():
  values, ids, valid = _random_segments(0)
  num = 8
  got_sum = seg.segment_sum(values, ids, num, where=valid)
  got_count = seg.segment_count(ids, num, where=valid)
  got_mean = seg.segment_mean(values, ids, num, where=valid)
  got_max = seg.segment_max(values, ids, num, where=valid)
  got_min = seg.segment_min(values, ids, num, where=valid)
  got_lse = seg.segment_logsumexp(values, ids, num, where=valid)
  for m in range(num):
    rows = values[(ids == m) & valid]
    np.testing.assert_allclose(got_sum[m], rows.sum(), atol=1e-5)
    assert int(got_count[m]) == len(rows)
    if len(rows):
      np.testing.assert_allclose(got_mean[m], rows.mean(), atol=1e-6)
      np.testing.assert_allclose(got_max[m], rows.max(), atol=1e-6)
      np.testing.assert_allclose(got_min[m], rows.min(), atol=1e-6)
      np.testing.assert_allclose(got_lse[m], np_logsumexp(rows), atol=1e-5)
    else:
      assert float(got_mean[m]) == 0.0
      assert float(got_max[m]) == -np.inf
      assert float(got_min[m]) == np.inf
      assert float(got_lse[m]) == -np.inf


def test_segment_logsumexp_is_stable_and_has_finite_gradients():
  values = jnp.array([1000., 1000., -1000., 3., -jnp.inf])
  ids = jnp.array([0, 0, 1, 3, 1])
  valid = jnp.array([True, True, True, False, True])
  lse = seg.segment_logsumexp(values, ids, 4, where=valid)
  np.testing.assert_allclose(lse[:2], [1000. + np.log(2.), -1000.], rtol=1e-6)
  assert float(lse[2]) == -np.inf and float(lse[3]) == -np.inf

  def finite_part(v):
    out = seg.segment_logsumexp(v, ids, 4, where=valid)
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0))

  grad = jax.grad(finite_part)(jnp.array([1000., 1000., -1000., 3., -5.]))
  assert np.all(np.isfinite(grad))
  # Segment 1 holds -1000 and -5: all the weight sits on -5.
  np.testing.assert_allclose(grad, [0.5, 0.5, 0.0, 0.0, 1.0], atol=1e-6)


def test_segment_log_softmax_matches_numpy():
  values, ids, valid = _random_segments(1)
  got = seg.segment_log_softmax(values, ids, 8, where=valid)
  for i in range(len(values)):
    if not valid[i]:
      assert float(got[i]) == 0.0
      continue
    rows = values[(ids == ids[i]) & valid]
    np.testing.assert_allclose(got[i], values[i] - np_logsumexp(rows),
                               atol=1e-5)


def test_out_of_range_ids_are_dropped_and_gather_fills():
  values = jnp.array([1., 2., 3.])
  ids = jnp.array([0, 2, -1])
  np.testing.assert_allclose(seg.segment_sum(values, ids, 2), [1., 0.])
  np.testing.assert_array_equal(
      seg.gather_segments(jnp.array([10, 20]), ids, fill_value=-1),
      [10, -1, -1])


def test_jit_agrees_with_eager():
  values, ids, valid = _random_segments(2)
  fn = lambda v, i, w: seg.segment_logsumexp(v, i, 8, where=w)
  np.testing.assert_allclose(jax.jit(fn)(values, ids, valid),
                             fn(values, ids, valid), rtol=1e-6)


def test_bad_arguments_name_themselves():
  with pytest.raises(TypeError, match="num_segments"):
    jax.jit(lambda v, k: seg.segment_sum(v, jnp.zeros(3, int), k))(
        jnp.ones(3), 3)
  with pytest.raises(ValueError, match="segment_ids"):
    seg.segment_sum(jnp.ones(3), jnp.zeros(4, int), 2)
  with pytest.raises(ValueError, match="where"):
    seg.segment_sum(jnp.ones(3), jnp.zeros(3, int), 2, where=jnp.ones(2, bool))
  with pytest.raises(TypeError, match="codes"):
    seg.prefix_segment_ids(jnp.ones((3, 2)))
  with pytest.raises(ValueError, match="outer_keys"):
    seg.prefix_segment_ids(jnp.ones((3, 2), int), outer_keys=jnp.ones(2, int))
