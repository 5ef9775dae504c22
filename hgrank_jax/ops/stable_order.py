"""Stable ascending order and its inverse along the last axis, fast on every platform.

``stable_order(key)`` returns the permutation that sorts ``key`` ascending
(ties in index order, NaN last, -0.0 equal to 0.0, exactly as
``jnp.argsort(key, stable=True)``) and the position of every entry in it. On
CPU, XLA's comparator sort of (key, index) pairs is several times slower than
numpy, so there the order comes from a host callback that sorts one 64-bit word
per entry: the float32 key mapped to an order-preserving 32-bit integer in the
high half, the index in the low half. One plain sort of those words is a stable
argsort, and numpy runs it with its vectorised integer sort. On accelerators,
where XLA's sort is fast, it stays in XLA.
"""

import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np


def _host_order(key):
  """Numpy twin of ``_xla_order`` for any leading shape."""
  key = np.asarray(key)
  n = key.shape[-1]
  flat = key.reshape(-1, n)
  if flat.dtype == np.float32 and n < 2**32:
    # Canonicalise so the bit pattern orders like the float comparison: all
    # NaNs become the positive quiet NaN (after +inf), -0.0 becomes +0.0.
    canonical = np.where(np.isnan(flat), np.float32(np.nan), flat + np.float32(0.0))
    bits = canonical.view(np.uint32)
    # Negative floats: flip every bit; others: flip the sign bit. Then unsigned
    # order is float order.
    flip = (np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000)
    ordered = bits ^ flip
    # One 64-bit word per entry, key in the high half and index in the low
    # half, written as two 32-bit halves (cheaper than shifting 64-bit copies).
    halves = np.empty(flat.shape + (2,), np.uint32)
    high, low = (1, 0) if sys.byteorder == "little" else (0, 1)
    halves[..., high] = ordered
    halves[..., low] = np.arange(n, dtype=np.uint32)
    words = np.sort(halves.view(np.uint64)[..., 0], axis=-1)
    order = words.view(np.uint32).reshape(flat.shape + (2,))[..., low].astype(np.int32)
  else:
    order = np.argsort(flat, axis=-1, kind="stable").astype(np.int32)
  inverse = np.empty_like(order)
  np.put_along_axis(inverse, order, np.arange(n, dtype=np.int32)[None, :], axis=-1)
  return order.reshape(key.shape), inverse.reshape(key.shape)


def result_like(x, dtype, shape=None):
  """``ShapeDtypeStruct`` (``x``'s shape by default) for a callback's or kernel's result.

  Inside ``shard_map`` the result must say along which mesh axes it varies;
  it varies as its input ``x`` does.
  """
  shape = x.shape if shape is None else shape
  manual_axis_type = getattr(jax.typeof(x), "manual_axis_type", None)
  if not getattr(manual_axis_type, "varying", None):  # outside shard_map
    return jax.ShapeDtypeStruct(shape, dtype)
  return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=manual_axis_type)


def _host(key):
  shape = result_like(key, jnp.int32)
  return jax.pure_callback(_host_order, (shape, shape), key, vmap_method="broadcast_all")


def _xla_order(key):
  order = jnp.argsort(key, axis=-1, stable=True).astype(jnp.int32)
  n = key.shape[-1]
  flat = order.reshape(-1, n)
  rows = jnp.arange(flat.shape[0])[:, None]
  positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), flat.shape)
  inverse = jnp.zeros_like(flat).at[rows, flat].set(positions)
  return order, inverse.reshape(key.shape)


def stable_order(key, *, implementation="auto"):
  """Stable ascending argsort of ``key`` and its inverse, along the last axis.

  ``order[..., j]`` is the index of the j-th smallest entry (ties in index
  order, NaN last) and ``inverse[..., i]`` the position of entry i, so
  ``take_along_axis(key, order) `` is sorted and ``order[inverse] = arange(n)``.

  Args:
    key: float or integer array ``[..., n]``; not differentiated.
    implementation: "auto" (numpy through a host callback on CPU, XLA's sort
      elsewhere), "host" or "xla".

  Returns:
    ``(order, inverse)``, both int32 ``[..., n]``.

  >>> order, inverse = stable_order(jnp.array([2.0, 0.0, 2.0, 1.0]))
  >>> order, inverse
  (Array([1, 3, 0, 2], dtype=int32), Array([2, 0, 3, 1], dtype=int32))
  """
  if implementation not in ("auto", "host", "xla"):
    raise ValueError(
        f"implementation must be 'auto', 'host' or 'xla', got {implementation!r}.")
  key = lax.stop_gradient(jnp.asarray(key))
  if key.ndim < 1:
    raise ValueError(f"key must have at least one axis, got shape {key.shape}.")
  if implementation == "host":
    return _host(key)
  if implementation == "xla":
    return _xla_order(key)
  return lax.platform_dependent(key, cpu=_host, default=_xla_order)
