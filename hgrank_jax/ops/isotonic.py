"""Isotonic regression and permutahedron projection in O(n log n), jit/vmap-native.

This module holds the kernel behind the ``fast`` differentiable sorting method
(Blondel et al. 2020, "Fast Differentiable Sorting and Ranking"): the Euclidean
projection of a vector onto the permutahedron of a weight vector, computed by
one sort plus a pool-adjacent-violators (PAV) pass, and the exact Jacobian of
that projection through a hand-written VJP.

PAV is written directly on a batch ``[B, n]`` as a single ``lax.while_loop``
whose every iteration either pushes the next element on a per-row stack of
blocks or merges the top two blocks, so it takes at most ``2 n - 1`` iterations
and O(B n) memory. There is no host callback and no ``n x n`` intermediate in
the forward or the backward pass: the Jacobian of isotonic regression is
block-diagonal with each block averaging its inputs, so the VJP is a segment
mean over the final blocks.

``barrier`` marks positions where a new block must start; PAV never pools
across it. The sorting ops use it to keep padded (masked) entries out of the
valid entries' blocks, each masked entry forming a block of its own.
"""

import jax
import jax.numpy as jnp
from jax import lax


def _pav_batched(y, barrier):
  """Runs PAV for a non-increasing fit on every row of ``y`` ([B, n]).

  Returns the fitted values ``[B, n]``, the block id of every position
  ``[B, n]`` (int32, blocks numbered from 0 left to right) and the size of the
  block each position belongs to ``[B, n]`` (float).
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

  init = (jnp.zeros_like(y), jnp.ones_like(y),
          jnp.zeros((num_rows, n), jnp.int32),
          jnp.full((num_rows,), -1, jnp.int32),
          jnp.zeros((num_rows,), jnp.int32))
  sums, counts, starts, top, _ = lax.while_loop(cond, body, init)

  # Expand blocks back to positions: mark each live block's start, then a
  # running count of marks is the block id of every position.
  live = jnp.arange(n)[None, :] <= top[:, None]
  marks = jnp.zeros((num_rows, n), jnp.int32).at[
      rows[:, None], jnp.where(live, starts, 0)].add(live.astype(jnp.int32))
  block_id = jnp.cumsum(marks, axis=1) - 1
  block_size = jnp.take_along_axis(counts, block_id, axis=1)
  fitted = jnp.take_along_axis(sums, block_id, axis=1) / block_size
  return fitted, block_id, block_size


def _block_mean(values, block_id, block_size):
  """Replaces every entry of ``values`` [B, n] by the mean over its block."""
  num_rows, n = values.shape
  flat_id = (block_id + n * jnp.arange(num_rows)[:, None]).reshape(-1)
  block_sums = jax.ops.segment_sum(
      values.reshape(-1), flat_id, num_segments=num_rows * n)
  return block_sums[flat_id].reshape(num_rows, n) / block_size


@jax.custom_vjp
def _isotonic_2d(y, barrier):
  return _pav_batched(y, barrier)[0]


def _isotonic_2d_fwd(y, barrier):
  fitted, block_id, block_size = _pav_batched(y, barrier)
  return fitted, (block_id, block_size)


def _isotonic_2d_bwd(residuals, cotangent):
  block_id, block_size = residuals
  return _block_mean(cotangent, block_id, block_size), None


_isotonic_2d.defvjp(_isotonic_2d_fwd, _isotonic_2d_bwd)


def isotonic_decreasing(y, barrier=None):
  """Least-squares non-increasing fit of ``y`` along the last axis.

  Solves ``argmin_v 0.5 * ||v - y||^2`` subject to ``v_0 >= v_1 >= ...``
  within each run of positions between barriers, by pool-adjacent-violators.
  Differentiable in ``y`` with the exact (block-averaging) Jacobian.

  Args:
    y: float array ``[..., n]``.
    barrier: optional bool array ``[..., n]``; ``True`` at position j starts a
      new block there, so the constraint ``v_{j-1} >= v_j`` is dropped.

  Returns:
    Float array ``[..., n]`` (same dtype as ``y``).

  >>> isotonic_decreasing(jnp.array([1.0, 3.0, 2.0, 0.0]))
  Array([2., 2., 2., 0.], dtype=float32)
  """
  y = jnp.asarray(y)
  if barrier is None:
    barrier = jnp.zeros(y.shape, bool)
  barrier = jnp.broadcast_to(barrier, y.shape)
  n = y.shape[-1]
  flat = _isotonic_2d(y.reshape(-1, n), barrier.reshape(-1, n))
  return flat.reshape(y.shape)


@jax.custom_vjp
def _project_2d(z_sorted, w_sorted, barrier):
  return _project_2d_fwd(z_sorted, w_sorted, barrier)[0]


def _project_2d_fwd(z_sorted, w_sorted, barrier):
  _, block_id, block_size = _pav_batched(z_sorted - w_sorted, barrier)
  # z - mean_block(z - w), regrouped as (z - mean_block z) + mean_block w so a
  # singleton block returns w exactly even when |z| dwarfs |w| (tiny
  # temperatures or large scores would otherwise cancel catastrophically).
  # Singletons are set to exactly 0: XLA may evaluate z (e.g. s / tau) once per
  # fusion with different roundings, and one ulp of a huge z must not leak.
  centred = jnp.where(block_size > 1,
                      z_sorted - _block_mean(z_sorted, block_id, block_size), 0.0)
  projected = centred + _block_mean(w_sorted, block_id, block_size)
  return projected, (block_id, block_size)


def _project_2d_bwd(residuals, cotangent):
  # d out / d z = I - A and d out / d w = A, with A the (symmetric)
  # block-averaging matrix.
  averaged = _block_mean(cotangent, *residuals)
  return cotangent - averaged, averaged, None


_project_2d.defvjp(_project_2d_fwd, _project_2d_bwd)


def project_sorted_permutahedron(z_sorted, w_sorted, barrier=None):
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

  Returns:
    Float array ``[..., n]``, the projection in sorted order.

  >>> project_sorted_permutahedron(jnp.array([0.5, 0.2]), jnp.array([2.0, 1.0]))
  Array([1.65, 1.35], dtype=float32)
  """
  z_sorted, w_sorted = jnp.broadcast_arrays(z_sorted, w_sorted)
  if barrier is None:
    barrier = jnp.zeros(z_sorted.shape, bool)
  barrier = jnp.broadcast_to(barrier, z_sorted.shape)
  n = z_sorted.shape[-1]
  flat = _project_2d(z_sorted.reshape(-1, n), w_sorted.reshape(-1, n),
                     barrier.reshape(-1, n))
  return flat.reshape(z_sorted.shape)
