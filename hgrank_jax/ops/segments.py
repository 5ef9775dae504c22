"""Segment utilities: O(n) reductions of values within dense group ids.

Listwise and group-wise losses, GAUC, rerankers and the trainer all need the
same two things: turn arbitrary integer keys (a user id, a request id, the first
``l`` codes of a hierarchical user code) into dense ids ``0 .. S-1``, and reduce
values within each id. The ids come from :mod:`hgrank_jax.ops.group_ids`
(re-exported here); the reductions are in this module. The number of segments
is bounded by the static row count ``n``, which keeps every shape static under
``jax.jit``.

Convention: rows that are masked out (``where`` False) receive the id ``n`` (or,
more generally, an id outside ``[0, num_segments)``); the reductions here drop
such rows, as ``jax.ops.segment_sum`` does.
"""

import functools
import inspect
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

# The id functions are re-exported here, next to the reductions that consume their ids.
from hgrank_jax.ops.group_ids import (DIRECT_PREFIX_LIMIT, TABLE_FACTOR, code_prefix_ids,
                                      dense_segment_ids, packed_segment_ids, prefix_segment_ids)

Array = jax.Array


def _check_num_segments(num_segments) -> int:
  # num_segments sets an output shape, so it has to be a Python int at trace
  # time; a traced value would fail deep inside XLA with an unhelpful message.
  if isinstance(num_segments, bool) or not isinstance(num_segments, int):
    try:
      num_segments = int(num_segments)  # numpy integers are fine
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
      raise TypeError(
          "num_segments must be a static Python int, got "
          f"{type(num_segments).__name__}") from err
  if num_segments < 0:
    raise ValueError(f"num_segments must be >= 0, got {num_segments}")
  return num_segments


def _jit_with_static_num_segments(fn):
  """jit ``fn`` with ``num_segments`` static, validating it first.

  Compiling each reduction as one program is several times cheaper than
  dispatching its primitives one by one in eager calls; under an outer jit the
  inner one is inlined. The check runs before jit so that a traced or
  non-integer ``num_segments`` gets an error naming it rather than a hashing
  error.
  """
  jitted = jax.jit(fn, static_argnames=("num_segments",))
  signature = inspect.signature(fn)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.arguments["num_segments"] = _check_num_segments(
        bound.arguments["num_segments"])
    return jitted(**bound.arguments)

  return wrapper


def _masked(values: Array, segment_ids: Array, num_segments: int,
            where: Optional[Array], fill) -> Tuple[Array, Array]:
  """Applies ``where`` by filling values and routing rows out of range."""
  values = jnp.asarray(values)
  segment_ids = jnp.asarray(segment_ids)
  if segment_ids.shape != values.shape[:1]:
    raise ValueError(
        f"segment_ids must have shape {values.shape[:1]} (the leading axis of "
        f"values), got {segment_ids.shape}")
  if where is not None:
    where = jnp.asarray(where)
    if where.shape != segment_ids.shape:
      raise ValueError(
          f"where must have shape {segment_ids.shape}, got {where.shape}")
    mask = where.reshape(where.shape + (1,) * (values.ndim - 1))
    values = jnp.where(mask, values, fill)
    segment_ids = jnp.where(where, segment_ids, num_segments)
  return values, segment_ids


@_jit_with_static_num_segments
def segment_sum(values: Array, segment_ids: Array, num_segments: int, *,
                where: Optional[Array] = None) -> Array:
  """Sum of ``values`` ``[n, ...]`` per segment: ``[num_segments, ...]``.

  Rows with ``where`` False or an id outside ``[0, num_segments)`` are dropped.

  >>> import jax.numpy as jnp
  >>> print(segment_sum(jnp.array([1., 2., 4.]), jnp.array([0, 1, 0]), 2))
  [5. 2.]
  """
  num_segments = _check_num_segments(num_segments)
  values, segment_ids = _masked(values, segment_ids, num_segments, where, 0)
  return jax.ops.segment_sum(values, segment_ids, num_segments=num_segments)


@_jit_with_static_num_segments
def segment_count(segment_ids: Array, num_segments: int, *,
                  where: Optional[Array] = None) -> Array:
  """Number of (valid) rows per segment, ``[num_segments]`` int32.

  >>> import jax.numpy as jnp
  >>> print(segment_count(jnp.array([0, 1, 0]), 3))
  [2 1 0]
  """
  ones = jnp.ones(jnp.shape(segment_ids), jnp.int32)
  return segment_sum(ones, segment_ids, num_segments, where=where)


@_jit_with_static_num_segments
def segment_mean(values: Array, segment_ids: Array, num_segments: int, *,
                 where: Optional[Array] = None,
                 empty_value: float = 0.0) -> Array:
  """Mean of ``values`` per segment; empty segments get ``empty_value``.

  >>> import jax.numpy as jnp
  >>> print(segment_mean(jnp.array([1., 2., 4.]), jnp.array([0, 1, 0]), 3))
  [2.5 2.  0. ]
  """
  totals = segment_sum(values, segment_ids, num_segments, where=where)
  counts = segment_count(segment_ids, num_segments, where=where)
  counts = counts.reshape(counts.shape + (1,) * (totals.ndim - 1))
  # Divide by a safe count so empty segments stay NaN-free in value and grad.
  means = totals / jnp.maximum(counts, 1).astype(totals.dtype)
  return jnp.where(counts > 0, means, jnp.asarray(empty_value, totals.dtype))


@_jit_with_static_num_segments
def segment_max(values: Array, segment_ids: Array, num_segments: int, *,
                where: Optional[Array] = None) -> Array:
  """Max per segment; empty segments get ``-inf``.

  >>> import jax.numpy as jnp
  >>> print(segment_max(jnp.array([1., 2., 4.]), jnp.array([0, 1, 0]), 3))
  [  4.   2. -inf]
  """
  num_segments = _check_num_segments(num_segments)
  values, segment_ids = _masked(values, segment_ids, num_segments, where,
                                -jnp.inf)
  return jax.ops.segment_max(values, segment_ids, num_segments=num_segments)


@_jit_with_static_num_segments
def segment_min(values: Array, segment_ids: Array, num_segments: int, *,
                where: Optional[Array] = None) -> Array:
  """Min per segment; empty segments get ``+inf`` (the dtype's max for ints).

  >>> import jax.numpy as jnp
  >>> print(segment_min(jnp.array([3, 2, 4]), jnp.array([0, 1, 0]), 2))
  [3 2]
  """
  num_segments = _check_num_segments(num_segments)
  values = jnp.asarray(values)
  fill = (jnp.inf if jnp.issubdtype(values.dtype, jnp.inexact)
          else jnp.iinfo(values.dtype).max)
  values, segment_ids = _masked(values, segment_ids, num_segments, where, fill)
  return jax.ops.segment_min(values, segment_ids, num_segments=num_segments)


@_jit_with_static_num_segments
def segment_logsumexp(values: Array, segment_ids: Array, num_segments: int, *,
                      where: Optional[Array] = None) -> Array:
  r"""Stable :math:`\log \sum_{i \in m} e^{v_i}` per segment, ``-inf`` if empty.

  Gradients are finite everywhere, empty segments included (they receive none).

  Args:
    values: ``[n]`` floats.
    segment_ids: ``[n]`` ints.
    num_segments: static number of segments.
    where: optional ``[n]`` bool mask.

  Returns:
    ``[num_segments]`` array.

  >>> import jax.numpy as jnp
  >>> lse = segment_logsumexp(jnp.array([0., 0., 5.]), jnp.array([0, 0, 1]), 3)
  >>> print(jnp.round(lse, 4))
  [0.6931 5.       -inf]
  """
  num_segments = _check_num_segments(num_segments)
  values, segment_ids = _masked(values, segment_ids, num_segments, where,
                                -jnp.inf)
  # Shift by the segment max for stability; the shift cancels analytically, so
  # it carries no gradient.
  peak = jax.lax.stop_gradient(
      jax.ops.segment_max(values, segment_ids, num_segments=num_segments))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  in_range = (segment_ids >= 0) & (segment_ids < num_segments)
  row_peak = gather_segments(peak, segment_ids, 0.0)
  shifted = jnp.where(in_range, jnp.exp(values - row_peak), 0.0)
  totals = jax.ops.segment_sum(shifted, segment_ids, num_segments=num_segments)
  nonempty = totals > 0
  # log(0) would give an infinite derivative; route empty segments around it.
  safe_log = jnp.log(jnp.where(nonempty, totals, 1.0))
  return jnp.where(nonempty, safe_log + peak, -jnp.inf)


@_jit_with_static_num_segments
def segment_log_softmax(values: Array, segment_ids: Array, num_segments: int,
                        *, where: Optional[Array] = None) -> Array:
  """Per-row log-softmax within each segment; masked rows get 0.

  >>> import jax.numpy as jnp
  >>> out = segment_log_softmax(jnp.array([0., 0., 5.]), jnp.array([0, 0, 1]),
  ...                           2)
  >>> print(jnp.round(out, 4))
  [-0.6931 -0.6931  0.    ]
  """
  lse = segment_logsumexp(values, segment_ids, num_segments, where=where)
  segment_ids = jnp.asarray(segment_ids)
  valid = (segment_ids >= 0) & (segment_ids < num_segments)
  if where is not None:
    valid &= jnp.asarray(where)
  row_lse = gather_segments(lse, segment_ids, 0.0)
  return jnp.where(valid, jnp.asarray(values) - jnp.where(valid, row_lse, 0.0),
                   0.0)


def gather_segments(per_segment: Array, segment_ids: Array,
                    fill_value=0) -> Array:
  """Broadcasts ``[num_segments, ...]`` values back to rows ``[n, ...]``.

  Rows whose id is outside ``[0, num_segments)`` (masked rows) get
  ``fill_value``.

  >>> import jax.numpy as jnp
  >>> print(gather_segments(jnp.array([10, 20]), jnp.array([1, 0, 2])))
  [20 10  0]
  """
  per_segment = jnp.asarray(per_segment)
  segment_ids = jnp.asarray(segment_ids)
  # Negative indices would wrap around in a gather; send them past the end so
  # that the fill mode catches them like any other out-of-range id.
  segment_ids = jnp.where(segment_ids < 0, per_segment.shape[0], segment_ids)
  return per_segment.at[segment_ids].get(mode="fill", fill_value=fill_value)


__all__: Sequence[str] = (
    "dense_segment_ids",
    "gather_segments",
    "packed_segment_ids",
    "prefix_segment_ids",
    "code_prefix_ids",
    "segment_count",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_max",
    "segment_mean",
    "segment_min",
    "segment_sum",
)
