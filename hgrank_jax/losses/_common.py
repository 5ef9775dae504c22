"""Shared argument checks and list flattening for the losses in this package.

Every loss takes ``logits`` and ``labels`` shaped ``[..., n]`` (lists on the
last axis, leading axes are independent lists) plus optional ``where`` and
``segments`` of the same shape. The checks run on shapes and dtypes only, so
they raise at trace time under ``jax.jit`` and name the offending argument.
"""

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.ops import segments as seg

Array = jax.Array


def check_same_shape(name: str, value, reference_shape, reference_name: str):
  """Raises ValueError naming ``name`` when its shape differs from the ref."""
  shape = jnp.shape(value)
  if shape != tuple(reference_shape):
    raise ValueError(
        f"{name} must have the same shape as {reference_name} "
        f"{tuple(reference_shape)}, got {shape}")


def prepare(logits, labels, where, segments, *, logits_name: str = "logits"
            ) -> Tuple[Array, Array, Array, Optional[Array]]:
  """Validates and converts the common arguments.

  Returns float ``logits``, float ``labels`` (masked rows zeroed), a bool
  ``valid`` mask and ``segments`` (or None), all with the list shape.
  """
  logits = jnp.asarray(logits)
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(f"{logits_name} must be floating point, got {logits.dtype}")
  list_shape = logits.shape
  if len(list_shape) < 1:
    raise ValueError(f"{logits_name} must have at least one axis (the list), "
                     f"got shape {logits.shape}")
  check_same_shape("labels", labels, list_shape, logits_name)
  labels = jnp.asarray(labels).astype(logits.dtype)
  if where is None:
    valid = jnp.ones(list_shape, jnp.bool_)
  else:
    check_same_shape("where", where, list_shape, logits_name)
    valid = jnp.asarray(where).astype(jnp.bool_)
  if segments is not None:
    check_same_shape("segments", segments, list_shape, logits_name)
    segments = jnp.asarray(segments)
    if not jnp.issubdtype(segments.dtype, jnp.integer):
      raise TypeError(f"segments must hold integers, got {segments.dtype}")
  labels = jnp.where(valid, labels, 0.0)
  return logits, labels, valid, segments


def list_segment_ids(list_shape, valid: Array,
                     segments: Optional[Array]) -> Tuple[Array, int]:
  """Flat segment ids for ``[..., n]`` inputs and their static bound.

  Each leading index is its own list; within a list, ``segments`` (when given)
  splits it further. Returns ``(ids [prod(shape)], num_segments)``; with
  ``segments`` the ids are those of :func:`hgrank_jax.ops.segments.packed_segment_ids`
  (not dense: some ids below the bound may be unused).
  """
  total = int(np.prod(list_shape))
  list_size = list_shape[-1]
  num_lists = total // list_size if list_size else 0
  list_index = jnp.repeat(jnp.arange(num_lists, dtype=jnp.int32), list_size)
  if segments is None:
    # Lists are already dense ids; no sort needed.
    return list_index, max(num_lists, 1)
  keys = jnp.stack([list_index, segments.reshape(-1).astype(jnp.int32)], 1)
  # The losses only reduce within ids, so small keys need no sort: list * S + segment.
  ids, bound = seg.packed_segment_ids(keys, where=valid.reshape(-1))
  return ids, max(bound, 1)


def is_concrete(value) -> bool:
  """True when ``value`` holds data (not a tracer), so it can be inspected."""
  return not isinstance(value, jax.core.Tracer)
