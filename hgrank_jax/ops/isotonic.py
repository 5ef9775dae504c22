"""Isotonic regression and permutahedron projection in O(n log n), jit/vmap-native.

This module holds the kernel behind the ``fast`` differentiable sorting method
(Blondel et al. 2020, "Fast Differentiable Sorting and Ranking"): the Euclidean
projection of a vector onto the permutahedron of a weight vector, computed by
one sort plus a pool-adjacent-violators (PAV) pass, and the exact Jacobian of
that projection through a hand-written VJP.

Every implementation computes one thing, the *block starts* of the PAV
solution (a bool per position, true where a pooled block begins); values and
the VJP are then segment means over those blocks. Pooling is the finest one:
adjacent blocks with exactly equal means stay apart, so the Jacobian at exact
ties is the block-diagonal one PAV defines. ``pav_blocks`` finds the starts
three ways, picked per platform at lowering time (``implementation="auto"``):

* ``"pallas"`` (GPU): a Pallas (Triton) kernel, one list per program; no XLA
  loop, the program is one kernel launch whatever n is.
* ``"host"`` (CPU): scipy's compiled PAV through ``jax.pure_callback``. For the
  permutahedron projection the callback also returns the block means (in
  float64), since XLA's segment sums cost as much as the PAV on a CPU.
* ``"loop"`` (any platform, the reference; TPU's default): PAV as one
  ``lax.while_loop`` over the batch, at most ``2 n - 1`` iterations.

All three give the same starts (tests compare them on random, tied, strictly
decreasing, sawtooth and tied-tail inputs), O(B n) memory and no ``n x n``
intermediate. ``barrier`` marks positions where a new block must start; PAV
never pools across it. The sorting ops use it to keep padded (masked) entries
out of the valid entries' blocks, each masked entry forming a block of its own.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from hgrank_jax.ops import pav_blocks
from hgrank_jax.ops import stable_order

IMPLEMENTATIONS = ("auto", "pallas", "host", "loop")

def _check_implementation(implementation):
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
  return implementation


# --- block layout and means ----------------------------------------------------


def _host_block_layout(y, barrier):
  """Numpy: block id and block size (int32) of every position, from the host PAV."""
  starts, _, lengths = pav_blocks.host_blocks(y, barrier)
  block_id = np.cumsum(starts, axis=-1, dtype=np.int32) - 1
  return block_id, np.repeat(lengths, lengths).reshape(starts.shape)


def _host_projection(z_sorted, w_sorted, barrier):
  """Numpy twin of ``_xla_projection``: the projection, block ids and sizes.

  ``z - w`` is formed in the inputs' dtype, as XLA forms it for the other
  implementations, so every implementation pools the same blocks; the block
  means are then taken in float64.
  """
  z = np.asarray(z_sorted)
  starts, flat_starts, lengths = pav_blocks.host_blocks(z - np.asarray(w_sorted), barrier)
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
  # Inside shard_map a callback's result is typed as varying only along some
  # axes; adding a zero made from y types it exactly as y (and is free).
  varying = jnp.zeros_like(y, dtype=jnp.int32)
  return block_id + varying, block_size + varying


def _layout_of(y, barrier, implementation):
  """Block id (from 0 per row) and block size, int32 ``[B, n]``, of PAV on each row."""
  if y.shape[-1] == 1:
    return jnp.zeros(y.shape, jnp.int32), jnp.ones(y.shape, jnp.int32)
  if implementation == "loop":
    return pav_blocks.layout_from_starts(pav_blocks.starts_loop(y, barrier))
  if implementation == "host":
    return _block_layout_host(y, barrier)
  if implementation == "pallas":
    # Off a GPU the kernel runs in Pallas' interpreter (for tests only: slow).
    return pav_blocks.layout_from_starts(pav_blocks.starts_pallas(
        y, barrier, interpret=jax.default_backend() != "gpu"))
  return lax.platform_dependent(
      y, barrier, cpu=_block_layout_host,
      cuda=lambda y, b: pav_blocks.layout_from_starts(pav_blocks.starts_pallas(y, b)),
      default=lambda y, b: pav_blocks.layout_from_starts(pav_blocks.starts_loop(y, b)))


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
  varying = jnp.zeros_like(z_sorted, dtype=jnp.int32)  # see _block_layout_host
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
    block_id, block_size = pav_blocks.layout_from_starts(pav_blocks.starts_pallas(z - w, barrier))
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
