"""Where the blocks of a pool-adjacent-violators (PAV) fit start, found three ways.

PAV fits a non-increasing sequence to each row of ``y`` by pooling adjacent
violators into blocks; everything ``isotonic`` computes (the fit, the
permutahedron projection, their exact Jacobians) follows from where those
blocks start. This module finds the starts, all three ways giving the same
answer (the finest pooling: adjacent blocks of equal mean stay apart):

* ``starts_loop``: PAV as one ``lax.while_loop`` over the batch, each iteration
  pushing the next element or merging the top two blocks (at most ``2 n - 1``
  iterations of small kernels); the reference, and the default off CPU and GPU.
* ``host_starts`` / ``host_blocks``: numpy around scipy's compiled PAV, per
  barrier-delimited run, for a host callback on CPU.
* ``starts_pallas``: a Pallas (Triton) kernel for GPUs, one list per program.

``barrier`` marks positions where a new block must start; PAV never pools
across it. ``layout_from_starts`` turns starts into block ids and sizes.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from hgrank_jax.ops import stable_order


@functools.cache
def _module(name):
  """Imports Pallas or scipy.optimize on first use: together they add about
  half a second to importing ``hgrank_jax.ops``, paid even by programs that
  never run the fast sort."""
  return importlib.import_module(name)


# --- "loop": PAV as one XLA while loop over the batch -------------------------


def starts_loop(y, barrier):
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


def host_starts(y, barrier):
  """Numpy: block starts (bool, ``y``'s shape) of the finest PAV pooling of every row of ``y``.

  The fit of ``[1, 3, 2, 0]`` is ``[2, 2, 2, 0]``; ``[1, 3]`` and ``[2]`` have
  equal means and stay separate blocks:

  >>> host_starts(np.array([[1.0, 3.0, 2.0, 0.0]]), np.zeros((1, 4), bool))
  array([[ True, False,  True,  True]])
  """
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


def host_blocks(y, barrier):
  """Numpy: block starts, and the flat start and length of every block."""
  starts = host_starts(y, barrier)
  flat_starts = np.flatnonzero(starts)
  lengths = np.diff(np.append(flat_starts, starts.size)).astype(np.int32)
  return starts, flat_starts, lengths


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


def starts_pallas(y, barrier, interpret=False):
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


def layout_from_starts(starts):
  """Block id ``[B, n]`` (from 0 per row) and block size of every position, both int32."""
  n = starts.shape[-1]
  positions = jnp.arange(n, dtype=jnp.int32)
  block_id = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1
  first = lax.cummax(jnp.where(starts, positions, 0), axis=1)
  next_starts = jnp.concatenate(
      [starts[:, 1:], jnp.ones(starts.shape[:1] + (1,), bool)], axis=1)
  last = lax.cummin(jnp.where(next_starts, positions, n), axis=1, reverse=True)
  return block_id, last - first + 1
