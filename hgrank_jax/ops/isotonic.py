"""Isotonic regression and permutahedron projection in O(n log n), jit/vmap-native.

This module holds the kernel behind the ``fast`` differentiable sorting method
(Blondel et al. 2020, "Fast Differentiable Sorting and Ranking"): the Euclidean
projection of a vector onto the permutahedron of a weight vector, computed by
one sort plus a pool-adjacent-violators (PAV) pass, and the exact Jacobian of
that projection through a hand-written VJP.

Every implementation computes one thing, the *block starts* of the PAV
solution (a bool per position, true where a pooled block begins); values and
the VJP are then segment means over those blocks, done in XLA. Pooling is the
finest one: adjacent blocks with exactly equal means stay apart, so the
Jacobian at exact ties is the block-diagonal one PAV defines. Three ways to
find the starts, picked per platform at lowering time (``implementation=
"auto"``):

* ``"pallas"`` (GPU): a Pallas (Triton) kernel, one list per program, running
  sequential PAV with the two top blocks in registers and the rest of the block
  stack in memory. No XLA loop: the program is one kernel launch whatever n is.
* ``"host"`` (CPU): scipy's compiled PAV (``scipy.optimize.isotonic_regression``)
  on every barrier-delimited run, through ``jax.pure_callback``; scipy pools
  equal means, so its blocks are split again where a block's prefix has
  exactly the block's mean (the split PAV itself would have kept). For the
  permutahedron projection the callback also returns the block means (in
  float64), since XLA's segment sums cost as much as the PAV on a CPU.
* ``"loop"`` (any platform, the reference; TPU's default): PAV written as one
  ``lax.while_loop`` over the batch whose iterations each push the next element
  or merge the top two blocks, at most ``2 n - 1`` of them.

All three give the same starts (tests compare them on random, tied, strictly
decreasing, sawtooth and tied-tail inputs), O(B n) memory and no ``n x n``
intermediate. ``barrier`` marks positions where a new block must start; PAV
never pools across it. The sorting ops use it to keep padded (masked) entries
out of the valid entries' blocks, each masked entry forming a block of its own.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from hgrank_jax.ops import stable_order

IMPLEMENTATIONS = ("auto", "pallas", "host", "loop")


@functools.cache
def _module(name):
  """Imports Pallas or scipy.optimize on first use: together they add about
  half a second to importing ``hgrank_jax.ops``, paid even by programs that
  never run the fast sort."""
  return importlib.import_module(name)


def _check_implementation(implementation):
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
  return implementation


# --- "loop": PAV as one XLA while loop over the batch -------------------------


def _block_starts_loop(y, barrier):
  """Block starts ``[B, n]`` of PAV on every row of ``y`` ([B, n]).

  One ``lax.while_loop`` whose every iteration, on all rows at once, either
  pushes the next element on a per-row stack of blocks or merges the top two
  blocks, so it takes at most ``2 n - 1`` iterations.
  """
  num_rows, n = y.shape
  rows = jnp.arange(num_rows)

  def take(values, index):
    return jnp.take_along_axis(values, index[:, None], axis=1)[:, 0]

  def violation(state):
    sums, counts, starts, top, _ = state
    has_two = top >= 1
    upper = jnp.maximum(top, 0)
    lower = jnp.maximum(top - 1, 0)
    # A non-increasing fit needs mean(lower block) >= mean(upper block); the
    # comparison is cross-multiplied so it stays exact for equal means.
    out_of_order = (take(sums, lower) * take(counts, upper)
                    < take(sums, upper) * take(counts, lower))
    may_merge = ~take(barrier, take(starts, upper))
    return has_two & out_of_order & may_merge

  def cond(state):
    next_index = state[4]
    return jnp.any((next_index < n) | violation(state))

  def body(state):
    sums, counts, starts, top, next_index = state
    merge = violation(state)
    push = ~merge & (next_index < n)
    upper = jnp.maximum(top, 0)
    lower = jnp.maximum(top - 1, 0)
    pushed_value = take(y, jnp.minimum(next_index, n - 1))
    slot = jnp.where(merge, lower, jnp.where(push, top + 1, upper))
    new_sum = jnp.where(
        merge, take(sums, lower) + take(sums, upper),
        jnp.where(push, pushed_value, take(sums, upper)))
    new_count = jnp.where(
        merge, take(counts, lower) + take(counts, upper),
        jnp.where(push, 1.0, take(counts, upper)))
    new_start = jnp.where(
        merge, take(starts, lower),
        jnp.where(push, next_index, take(starts, upper)))
    sums = sums.at[rows, slot].set(new_sum)
    counts = counts.at[rows, slot].set(new_count)
    starts = starts.at[rows, slot].set(new_start)
    top = jnp.where(merge, top - 1, jnp.where(push, top + 1, top))
    next_index = jnp.where(push, next_index + 1, next_index)
    return sums, counts, starts, top, next_index

  # Built from y so that, inside shard_map, the carry varies as y does.
  row_zeros = jnp.zeros_like(y[:, 0], dtype=jnp.int32)
  init = (jnp.zeros_like(y), jnp.ones_like(y), jnp.zeros_like(y, dtype=jnp.int32),
          row_zeros - 1, row_zeros)
  _, _, starts, top, _ = lax.while_loop(cond, body, init)
  live = jnp.arange(n)[None, :] <= top[:, None]
  return jnp.zeros((num_rows, n), bool).at[
      rows[:, None], jnp.where(live, starts, 0)].max(live)


# --- "host": scipy's compiled PAV through a host callback ----------------------


def _host_block_starts(y, barrier):
  """Numpy: block starts of the finest PAV pooling of every row of ``y``."""
  y = np.asarray(y, np.float64)
  barrier = np.asarray(barrier, bool)
  shape = y.shape
  n = shape[-1]
  y = y.reshape(-1, n)
  starts = barrier.reshape(-1, n).copy()
  starts[:, 0] = True
  fitted = y.copy()
  # Common case first: barriers only on a suffix (padding), one run per row.
  one_run = (starts[:, 2:] >= starts[:, 1:-1]).all(axis=1)
  run_length = n - starts[:, 1:].sum(axis=1)
  for row in np.flatnonzero(one_run & (run_length > 1)):
    m = run_length[row]
    fit = _module("scipy.optimize").isotonic_regression(y[row, :m], increasing=False)
    starts[row, fit.blocks[:-1]] = True
    fitted[row, :m] = fit.x
  for row in np.flatnonzero(~one_run):
    run_starts = np.flatnonzero(starts[row])
    run_ends = np.append(run_starts[1:], n)
    pooled = run_ends - run_starts > 1  # single positions are blocks already
    for lo, hi in zip(run_starts[pooled], run_ends[pooled]):
      fit = _module("scipy.optimize").isotonic_regression(y[row, lo:hi], increasing=False)
      starts[row, lo + fit.blocks[:-1]] = True
      fitted[row, lo:hi] = fit.x
  # scipy pools adjacent blocks of equal mean; PAV that merges only strict
  # violators keeps them apart. A block of sum S and length L splits after
  # position j where its prefix has the block's mean, compared cross-multiplied
  # as PAV compares means: prefix_sum * L == S * prefix_length. In floating
  # point that can only hold where the sums are exact, which is exactly where
  # two means can be equal. Checked exhaustively against "loop" in the tests.
  flat_starts = np.flatnonzero(starts)
  lengths = np.diff(np.append(flat_starts, y.size))
  running = np.cumsum(y.ravel())
  before = np.concatenate([[0.0], running[flat_starts[1:] - 1]])
  block_sum = np.append(before[1:], running[-1]) - before
  prefix_sum = running - np.repeat(before, lengths)
  prefix_length = np.arange(1, y.size + 1) - np.repeat(flat_starts, lengths)
  exact = (prefix_sum * np.repeat(lengths, lengths)
           == np.repeat(block_sum, lengths) * prefix_length).reshape(y.shape)
  starts[:, 1:] |= exact[:, :-1]
  return starts.reshape(shape)


def _host_blocks(y, barrier):
  """Numpy: block starts, and the flat start and length of every block."""
  starts = _host_block_starts(y, barrier)
  flat_starts = np.flatnonzero(starts)
  lengths = np.diff(np.append(flat_starts, starts.size)).astype(np.int32)
  return starts, flat_starts, lengths


def _host_block_layout(y, barrier):
  """Numpy: block id and block size (int32) of every position, from the host PAV."""
  starts, _, lengths = _host_blocks(y, barrier)
  block_id = np.cumsum(starts, axis=-1, dtype=np.int32) - 1
  return block_id, np.repeat(lengths, lengths).reshape(starts.shape)


def _host_projection(z_sorted, w_sorted, barrier):
  """Numpy twin of ``_xla_projection``: the projection, block ids and sizes.

  ``z - w`` is formed in the inputs' dtype, as XLA forms it for the other
  implementations, so every implementation pools the same blocks; the block
  means are then taken in float64.
  """
  z = np.asarray(z_sorted)
  starts, flat_starts, lengths = _host_blocks(z - np.asarray(w_sorted), barrier)
  block_id = np.cumsum(starts, axis=-1, dtype=np.int32) - 1
  block_size = np.repeat(lengths, lengths).reshape(z.shape)

  def block_mean(values):
    sums = np.add.reduceat(np.asarray(values, np.float64).ravel(), flat_starts)
    return np.repeat(sums / lengths, lengths).reshape(z.shape)

  centred = np.where(block_size > 1, z - block_mean(z), 0.0)
  projected = (centred + block_mean(w_sorted)).astype(z.dtype)
  return projected, block_id, block_size


def _block_layout_host(y, barrier):
  # The layout comes from numpy too: XLA's cumulative max/min on CPU cost more
  # than the whole host PAV.
  shape = stable_order.result_like(y, jnp.int32)
  block_id, block_size = jax.pure_callback(
      _host_block_layout, (shape, shape), y, barrier, vmap_method="broadcast_all")
  varying = jnp.zeros_like(y, dtype=jnp.int32)  # see _block_starts_host
  return block_id + varying, block_size + varying


def _block_starts_host(y, barrier):
  starts = jax.pure_callback(
      _host_block_starts, stable_order.result_like(y, jnp.bool_), y, barrier,
      vmap_method="broadcast_all")
  # Inside shard_map a callback's result is typed as varying only along some
  # axes; or-ing with a mask made from y types it exactly as y (and is free).
  return starts | jnp.zeros_like(y, dtype=bool)


# --- "pallas": one GPU program per list ---------------------------------------


def _pav_kernel(y_ref, barrier_ref, starts_ref, stack_sum_ref, stack_count_ref,
                stack_first_ref, stack_barrier_ref, *, n):
  """Sequential PAV on one row, the two top blocks kept in registers.

  A block is (sum, count, first position, barrier at its first position). The
  stack below the second block lives in the ``stack_*`` outputs, used as
  scratch; its slot 0 holds an empty block (count 0) that stops merging, so no
  branch is needed at the bottom. ``starts_ref[i]`` is set when element i is
  pushed and cleared when its block is merged into the one below.
  """
  dtype = y_ref.dtype
  one = jnp.ones((), dtype)

  def violates(state):
    top_sum, top_count, _, top_barrier, low_sum, low_count, _, _, _ = state
    return ((top_barrier == 0) & (low_count > 0)
            & (low_sum * top_count < top_sum * low_count))

  def merge(state):
    top_sum, top_count, top_first, _, low_sum, low_count, low_first, \
        low_barrier, depth = state
    starts_ref[top_first] = jnp.int32(0)
    depth = depth - 1
    return (low_sum + top_sum, low_count + top_count, low_first, low_barrier,
            stack_sum_ref[depth], stack_count_ref[depth], stack_first_ref[depth],
            stack_barrier_ref[depth], depth)

  def push(i, state):
    top_sum, top_count, top_first, top_barrier, low_sum, low_count, low_first, \
        low_barrier, depth = state
    stack_sum_ref[depth] = low_sum
    stack_count_ref[depth] = low_count
    stack_first_ref[depth] = low_first
    stack_barrier_ref[depth] = low_barrier
    starts_ref[i] = jnp.int32(1)
    state = (y_ref[i], one, i, barrier_ref[i], top_sum, top_count, top_first,
             top_barrier, depth + 1)
    return lax.while_loop(violates, merge, state)

  starts_ref[0] = jnp.int32(1)
  zero = jnp.zeros((), dtype)
  empty_block = (zero, zero, jnp.int32(0), jnp.int32(1))
  first_block = (y_ref[0], one, jnp.int32(0), barrier_ref[0])
  lax.fori_loop(1, n, push, first_block + empty_block + (jnp.int32(0),))


def _block_starts_pallas(y, barrier, interpret=False):
  pl = _module("jax.experimental.pallas")
  pallas_triton = _module("jax.experimental.pallas.triton")
  num_rows, n = y.shape
  # Triton blocks need power-of-two sizes; the padding is never read.
  width = max(pl.next_power_of_2(n), 2)
  pad = ((0, 0), (0, width - n))
  row = pl.BlockSpec((None, width), lambda r: (r, 0))
  shapes = [stable_order.result_like(y, dtype, (num_rows, width))
            for dtype in (jnp.int32, y.dtype, y.dtype, jnp.int32, jnp.int32)]
  starts = pl.pallas_call(
      functools.partial(_pav_kernel, n=n), grid=(num_rows,),
      in_specs=[row, row], out_specs=[row] * len(shapes), out_shape=shapes,
      compiler_params=pallas_triton.CompilerParams(num_warps=1, num_stages=1),
      interpret=interpret,
  )(jnp.pad(y, pad), jnp.pad(barrier.astype(jnp.int32), pad, constant_values=1))[0]
  return starts[:, :n] != 0


def _layout_of(y, barrier, implementation):
  """Block id (from 0 per row) and block size, int32 ``[B, n]``, of PAV on each row."""
  if y.shape[-1] == 1:
    return jnp.zeros(y.shape, jnp.int32), jnp.ones(y.shape, jnp.int32)
  if implementation == "loop":
    return _block_layout(_block_starts_loop(y, barrier))
  if implementation == "host":
    return _block_layout_host(y, barrier)
  if implementation == "pallas":
    # Off a GPU the kernel runs in Pallas' interpreter (for tests only: slow).
    return _block_layout(_block_starts_pallas(
        y, barrier, interpret=jax.default_backend() != "gpu"))
  return lax.platform_dependent(
      y, barrier, cpu=_block_layout_host,
      cuda=lambda y, b: _block_layout(_block_starts_pallas(y, b)),
      default=lambda y, b: _block_layout(_block_starts_loop(y, b)))


# --- blocks: ids, sizes and means from the starts -----------------------------


def _block_layout(starts):
  """Block id ``[B, n]`` (from 0 per row) and block size of every position, both int32."""
  n = starts.shape[-1]
  positions = jnp.arange(n, dtype=jnp.int32)
  block_id = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1
  first = lax.cummax(jnp.where(starts, positions, 0), axis=1)
  next_starts = jnp.concatenate(
      [starts[:, 1:], jnp.ones(starts.shape[:1] + (1,), bool)], axis=1)
  last = lax.cummin(jnp.where(next_starts, positions, n), axis=1, reverse=True)
  return block_id, last - first + 1


def _block_mean(values, block_id, block_size):
  """Replaces every entry of ``values`` [B, n] by the mean over its block."""
  num_rows, n = values.shape
  flat_id = (block_id + n * jnp.arange(num_rows)[:, None]).reshape(-1)
  block_sums = jax.ops.segment_sum(
      values.reshape(-1), flat_id, num_segments=num_rows * n,
      indices_are_sorted=True)
  return block_sums[flat_id].reshape(num_rows, n) / block_size.astype(values.dtype)


def _blocks(y, barrier, implementation):
  return _layout_of(lax.stop_gradient(y), barrier, implementation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _isotonic_2d(y, barrier, implementation):
  return _isotonic_2d_fwd(y, barrier, implementation)[0]


def _isotonic_2d_fwd(y, barrier, implementation):
  block_id, block_size = _blocks(y, barrier, implementation)
  return _block_mean(y, block_id, block_size), (block_id, block_size)


def _isotonic_2d_bwd(implementation, residuals, cotangent):
  del implementation
  # The Jacobian is block-diagonal, each block averaging its inputs.
  return _block_mean(cotangent, *residuals), None


_isotonic_2d.defvjp(_isotonic_2d_fwd, _isotonic_2d_bwd)


def isotonic_decreasing(y, barrier=None, *, implementation="auto"):
  """Least-squares non-increasing fit of ``y`` along the last axis.

  Solves ``argmin_v 0.5 * ||v - y||^2`` subject to ``v_0 >= v_1 >= ...``
  within each run of positions between barriers, by pool-adjacent-violators.
  Differentiable in ``y`` with the exact (block-averaging) Jacobian.

  Args:
    y: float array ``[..., n]``.
    barrier: optional bool array ``[..., n]``; ``True`` at position j starts a
      new block there, so the constraint ``v_{j-1} >= v_j`` is dropped.
    implementation: how PAV's blocks are found: "auto" (per platform: the
      Pallas kernel on GPU, scipy through a host callback on CPU, the XLA loop
      elsewhere), or one of "pallas", "host", "loop" (see the module doc).

  Returns:
    Float array ``[..., n]`` (same dtype as ``y``).

  >>> isotonic_decreasing(jnp.array([1.0, 3.0, 2.0, 0.0]))
  Array([2., 2., 2., 0.], dtype=float32)
  """
  _check_implementation(implementation)
  y = jnp.asarray(y)
  if barrier is None:
    barrier = jnp.zeros(y.shape, bool)
  barrier = jnp.broadcast_to(barrier, y.shape)
  n = y.shape[-1]
  flat = _isotonic_2d(y.reshape(-1, n), barrier.reshape(-1, n), implementation)
  return flat.reshape(y.shape)


def _xla_projection(z_sorted, w_sorted, block_id, block_size):
  # z - mean_block(z - w), regrouped as (z - mean_block z) + mean_block w so a
  # singleton block returns w exactly even when |z| dwarfs |w| (tiny
  # temperatures or large scores would otherwise cancel catastrophically).
  # Singletons are set to exactly 0: XLA may evaluate z (e.g. s / tau) once per
  # fusion with different roundings, and one ulp of a huge z must not leak.
  centred = jnp.where(block_size > 1,
                      z_sorted - _block_mean(z_sorted, block_id, block_size), 0.0)
  return centred + _block_mean(w_sorted, block_id, block_size)


def _projection_host(z_sorted, w_sorted, barrier):
  # On CPU the whole forward pass stays on the host: XLA's segment sums for the
  # two block means would cost about as much as the PAV itself.
  int_shape = stable_order.result_like(z_sorted, jnp.int32)
  projected, block_id, block_size = jax.pure_callback(
      _host_projection, (stable_order.result_like(z_sorted, z_sorted.dtype),
                         int_shape, int_shape),
      z_sorted, w_sorted, barrier, vmap_method="broadcast_all")
  varying = jnp.zeros_like(z_sorted, dtype=jnp.int32)  # see _block_starts_host
  return projected + varying.astype(projected.dtype), block_id + varying, block_size + varying


def _projection(z_sorted, w_sorted, barrier, implementation):
  """The projection and its blocks (id, size) for ``implementation``."""

  def with_xla_means(implementation):
    def project(z, w, barrier):
      block_id, block_size = _layout_of(z - w, barrier, implementation)
      return _xla_projection(z, w, block_id, block_size), block_id, block_size
    return project

  def on_gpu(z, w, barrier):
    # The compiled kernel: this branch is only ever lowered for a GPU.
    block_id, block_size = _block_layout(_block_starts_pallas(z - w, barrier))
    return _xla_projection(z, w, block_id, block_size), block_id, block_size

  z_sorted, w_sorted = lax.stop_gradient(z_sorted), lax.stop_gradient(w_sorted)
  if z_sorted.shape[-1] == 1 or implementation in ("loop", "pallas"):
    return with_xla_means(implementation)(z_sorted, w_sorted, barrier)
  if implementation == "host":
    return _projection_host(z_sorted, w_sorted, barrier)
  return lax.platform_dependent(
      z_sorted, w_sorted, barrier, cpu=_projection_host,
      cuda=on_gpu, default=with_xla_means("loop"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _project_2d(z_sorted, w_sorted, barrier, implementation):
  return _project_2d_fwd(z_sorted, w_sorted, barrier, implementation)[0]


def _project_2d_fwd(z_sorted, w_sorted, barrier, implementation):
  projected, block_id, block_size = _projection(z_sorted, w_sorted, barrier,
                                                implementation)
  return projected, (block_id, block_size)


def _project_2d_bwd(implementation, residuals, cotangent):
  del implementation
  # d out / d z = I - A and d out / d w = A, with A the (symmetric)
  # block-averaging matrix.
  averaged = _block_mean(cotangent, *residuals)
  return cotangent - averaged, averaged, None


_project_2d.defvjp(_project_2d_fwd, _project_2d_bwd)


def project_sorted_permutahedron(z_sorted, w_sorted, barrier=None, *,
                                 implementation="auto"):
  """Projects ``z`` onto the permutahedron of ``w``, both sorted descending.

  For ``z`` sorted in non-increasing order and ``w`` non-increasing, the
  projection onto the convex hull of all permutations of ``w`` is
  ``z - isotonic_decreasing(z - w)`` (Blondel et al. 2020, Prop. 3). Callers
  sort ``z`` themselves and undo the sort on the result. The VJP is exact and
  O(n): within each final PAV block the output moves with the block mean of
  ``w`` and with ``z`` minus its block mean.

  Args:
    z_sorted: float array ``[..., n]``, non-increasing along the last axis
      within each barrier-delimited run.
    w_sorted: float array ``[..., n]``, non-increasing likewise.
    barrier: optional bool ``[..., n]``, see ``isotonic_decreasing``; each
      run is projected onto the permutahedron of its own part of ``w``.
    implementation: see ``isotonic_decreasing``.

  Returns:
    Float array ``[..., n]``, the projection in sorted order.

  >>> project_sorted_permutahedron(jnp.array([0.5, 0.2]), jnp.array([2.0, 1.0]))
  Array([1.65, 1.35], dtype=float32)
  """
  _check_implementation(implementation)
  z_sorted, w_sorted = jnp.broadcast_arrays(z_sorted, w_sorted)
  if barrier is None:
    barrier = jnp.zeros(z_sorted.shape, bool)
  barrier = jnp.broadcast_to(barrier, z_sorted.shape)
  n = z_sorted.shape[-1]
  flat = _project_2d(z_sorted.reshape(-1, n), w_sorted.reshape(-1, n),
                     barrier.reshape(-1, n), implementation)
  return flat.reshape(z_sorted.shape)
