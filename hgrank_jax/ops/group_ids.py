"""Dense group ids: turn integer keys into ids ``0 .. S-1`` for the segment reductions.

Listwise and group-wise losses, GAUC and the rerankers group rows by arbitrary
integer keys (a user id, a request id, the first ``l`` codes of a hierarchical
user code). :func:`prefix_segment_ids` numbers the groups of every prefix length.
When the valid rows' keys span a small range (their mixed-radix packing, e.g.
``list * S + segment``, stays below ``TABLE_FACTOR * n``) the rows are counted
into a table of that size and the occupied entries numbered in order: O(n) work
and no sort. Otherwise one sort (of the key columns packed into one integer when
their ranges allow) is used, so cost is O(n log n) in rows and O(n) in memory
whatever the key space. :func:`code_prefix_ids` counts into a ``K**l`` table
when the codes' range ``[0, K)`` is known statically; :func:`dense_segment_ids`
is the one-level case. Masked rows get the id ``n``, which the reductions of
:mod:`hgrank_jax.ops.segments` drop.
"""

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array


def _keys_matrix(keys: Array, name: str) -> Array:
  keys = jnp.asarray(keys)
  if keys.ndim == 1:
    keys = keys[:, None]
  if keys.ndim != 2:
    raise ValueError(
        f"{name} must have shape [n] or [n, k], got shape {keys.shape}")
  if not (jnp.issubdtype(keys.dtype, jnp.integer) or keys.dtype == jnp.bool_):
    raise TypeError(f"{name} must hold integers, got dtype {keys.dtype}")
  return keys.astype(jnp.int32)


def _check_where(where: Optional[Array], n: int) -> Array:
  if where is None:
    return jnp.ones((n,), jnp.bool_)
  where = jnp.asarray(where)
  if where.shape != (n,):
    raise ValueError(f"where must have shape ({n},), got {where.shape}")
  return where.astype(jnp.bool_)


_PACKED_BITS = 30  # packed keys stay below 2**30, so INT32_MAX can mark masked rows


def _lexicographic_order(keys: Array, valid: Array) -> Array:
  """Stable order of rows by ``keys`` columns (first most significant), masked last.

  When the valid rows' key ranges fit in 30 bits together (e.g. codes with
  ``K**L <= 2**30``, the usual case) the columns are packed into one int32 and a
  single-key sort is used, which XLA runs several times faster than the
  multi-operand comparator sort of ``jnp.lexsort``; otherwise it falls back to
  ``jnp.lexsort``. Both give the same order.
  """
  big = jnp.iinfo(jnp.int32).max
  low = jnp.min(jnp.where(valid[:, None], keys, big), axis=0)
  high = jnp.max(jnp.where(valid[:, None], keys, -big), axis=0)
  # The difference in uint32 is exact even where int32 would overflow.
  span = jnp.where(high >= low, high.astype(jnp.uint32) - low.astype(jnp.uint32), 0)
  low = jnp.where(high >= low, low, 0)  # no valid rows: any packing works
  widths = (32 - jax.lax.clz(span)).astype(jnp.int32)  # bits to hold 0..span
  # Column j is shifted left by the widths of the columns after it.
  shifts = jnp.cumsum(widths[::-1])[::-1] - widths
  fits = jnp.sum(widths) <= _PACKED_BITS

  def packed_order():
    digits = jnp.where(valid[:, None], keys - low, 0)
    packed = jnp.sum(jnp.left_shift(digits, jnp.where(fits, shifts, 0)), axis=1)
    return jnp.argsort(jnp.where(valid, packed, big), stable=True)

  def lexsort_order():
    # jnp.lexsort treats the last key as most significant: masked rows go last
    # (so valid ids are contiguous from 0), then the key columns in order.
    sort_keys = [keys[:, j] for j in reversed(range(keys.shape[1]))]
    sort_keys.append(jnp.logical_not(valid).astype(jnp.int32))
    return jnp.lexsort(sort_keys)

  return jax.lax.cond(fits, packed_order, lexsort_order)


# Keys whose packed range is below TABLE_FACTOR * n are counted into a table of
# that size instead of sorted: O(n) memory either way, and no sort.
TABLE_FACTOR = 2


def _table_radices(keys: Array, valid: Array, table_size: int) -> Tuple[Array, Array, Array]:
  """Per-column minimum and radix ``max - min + 1`` over valid rows, and whether
  the mixed-radix packing of all columns stays below ``table_size``.

  The check runs in exact integer arithmetic (column spans may be close to
  2**32); columns without a valid row get radix 1.
  """
  big = jnp.iinfo(jnp.int32).max
  low = jnp.min(jnp.where(valid[:, None], keys, big), axis=0)
  high = jnp.max(jnp.where(valid[:, None], keys, -big), axis=0)
  # The difference in uint32 is exact even where int32 would overflow.
  span = jnp.where(high >= low, high.astype(jnp.uint32) - low.astype(jnp.uint32), 0)
  fits = jnp.array(True)
  product = jnp.uint32(1)  # packed range of the columns so far, <= table_size while fits
  for column in range(keys.shape[1]):
    # product * (span + 1) <= table_size  <=>  span < table_size // product
    fits &= span[column] < jnp.uint32(table_size) // product
    product = jnp.where(fits, product * (span[column] + 1), 1)
  radix = jnp.where(fits, span + 1, 1).astype(jnp.int32)
  return jnp.where(high >= low, low, 0), radix, fits


def _table_prefix_ids(keys, valid, low, radix, num_outer, num_levels, table_size):
  """Prefix ids by counting rows into a table of packed keys (keys must fit it).

  Level ``l`` packs its key columns in mixed radix, first column most
  significant, so the table's occupied entries are numbered in the same order
  as the sort would number them.
  """
  n = keys.shape[0]
  digits = jnp.where(valid[:, None], keys - low, 0)
  packed = jnp.zeros((n,), jnp.int32)
  for column in range(num_outer):
    packed = packed * radix[column] + digits[:, column]
  ones = valid.astype(jnp.int32)
  all_ids, counts = [], []
  for column in range(num_outer, num_outer + num_levels):
    packed = packed * radix[column] + digits[:, column]
    occupied = jax.ops.segment_sum(ones, packed, num_segments=table_size) > 0
    rank = jnp.cumsum(occupied.astype(jnp.int32)) - 1
    all_ids.append(jnp.where(valid, rank[packed], n))
    counts.append(jnp.sum(occupied.astype(jnp.int32)))
  return jnp.stack(all_ids).astype(jnp.int32), jnp.stack(counts).astype(jnp.int32)


def _sorted_prefix_ids(keys, valid, num_outer, num_levels):
  """Prefix ids from one lexicographic sort of the rows (any integer keys)."""
  n = keys.shape[0]
  order = _lexicographic_order(keys, valid)
  sorted_keys = keys[order]
  sorted_valid = valid[order]

  differs = sorted_keys[1:] != sorted_keys[:-1]  # [n-1, k + L]
  # A change in any earlier column also opens a new group at deeper levels.
  changed_so_far = jnp.cumsum(differs.astype(jnp.int32), axis=1) > 0
  opens = changed_so_far[:, num_outer:]  # [n-1, L]: only levels 1..L
  opens = jnp.concatenate([jnp.ones((1, num_levels), jnp.bool_), opens])
  sorted_ids = jnp.cumsum(opens.astype(jnp.int32), axis=0) - 1
  num_groups = jnp.sum(opens & sorted_valid[:, None], axis=0).astype(jnp.int32)
  sorted_ids = jnp.where(sorted_valid[:, None], sorted_ids, n)
  ids = jnp.zeros((n, num_levels), jnp.int32).at[order].set(sorted_ids)
  return ids.T, num_groups


@functools.partial(jax.jit, static_argnames=("method",))
def prefix_segment_ids(
    codes: Array,
    *,
    where: Optional[Array] = None,
    outer_keys: Optional[Array] = None,
    method: str = "auto",
) -> Tuple[Array, Array]:
  r"""Dense group ids for every prefix length of a code matrix.

  For level :math:`l = 1..L`, rows whose first :math:`l` codes agree (and whose
  ``outer_keys`` agree, when given) share an id, and ids follow the
  lexicographic order of the keys. With ``method="auto"``, when the valid rows'
  key columns span ranges :math:`r_j` with :math:`\prod_j r_j \le`
  ``TABLE_FACTOR * n`` (small integer keys such as ``list * S + segment``) the
  rows are counted into a table of packed keys, O(n) work; otherwise one
  lexicographic sort serves all levels: after sorting, a row opens a new
  level-:math:`l` group when any of its first :math:`l` codes differs from the
  previous row's. Both give the same ids; ``method="sort"`` forces the sort.

  Args:
    codes: ``[n, L]`` integer array (``[n]`` is read as ``L = 1``).
    where: optional ``[n]`` bool mask; masked rows get id ``n`` at every level.
    outer_keys: optional ``[n]`` or ``[n, k]`` integer keys that split groups
      further at every level (for example a list index or a request id).
    method: ``"auto"`` (table when the keys fit, else sort) or ``"sort"``.

  Returns:
    ``(ids, num_groups)``: ``ids`` is ``[L, n]`` int32 with values in
    ``[0, num_groups[l])`` for valid rows and ``n`` for masked rows;
    ``num_groups`` is ``[L]`` int32. Ids are numbered in sorted key order.

  >>> import jax.numpy as jnp
  >>> codes = jnp.array([[1, 0], [0, 3], [1, 2], [1, 0]])
  >>> ids, counts = prefix_segment_ids(codes)
  >>> print(ids)
  [[1 0 1 1]
   [1 0 2 1]]
  >>> print(counts)
  [2 3]
  """
  if method not in ("auto", "sort"):
    raise ValueError(f"method must be 'auto' or 'sort', got {method!r}")
  codes = _keys_matrix(codes, "codes")
  n, num_levels = codes.shape
  valid = _check_where(where, n)
  if outer_keys is None:
    outer = jnp.zeros((n, 0), jnp.int32)
  else:
    outer = _keys_matrix(outer_keys, "outer_keys")
    if outer.shape[0] != n:
      raise ValueError(
          f"outer_keys must have {n} rows like codes, got {outer.shape[0]}")
  if n == 0:
    return (jnp.zeros((num_levels, 0), jnp.int32),
            jnp.zeros((num_levels,), jnp.int32))

  keys = jnp.concatenate([outer, codes], axis=1)
  num_outer = outer.shape[1]
  if method == "sort":
    return _sorted_prefix_ids(keys, valid, num_outer, num_levels)
  table_size = TABLE_FACTOR * n
  low, radix, fits = _table_radices(keys, valid, table_size)
  return jax.lax.cond(
      fits,
      lambda: _table_prefix_ids(keys, valid, low, radix, num_outer, num_levels, table_size),
      lambda: _sorted_prefix_ids(keys, valid, num_outer, num_levels))


def packed_segment_ids(
    keys: Array, *, where: Optional[Array] = None
) -> Tuple[Array, int]:
  """Segment ids for the reductions, not necessarily dense: no sort for small keys.

  Rows with equal keys share an id. When the valid rows' key columns pack into
  fewer than ``TABLE_FACTOR * n`` values (e.g. ``[list, segment]`` with
  ``num_lists * S`` small), the id is the mixed-radix packing itself,
  ``list * S + (segment - min)``: O(n), no sort and no renumbering. Otherwise it
  is the dense id of :func:`dense_segment_ids` (found by sorting). Either way
  ids lie in ``[0, TABLE_FACTOR * n)`` and masked rows get ``TABLE_FACTOR * n``;
  ids of absent keys stay unused, which the reductions of
  :mod:`hgrank_jax.ops.segments` (and a loss averaging over occupied segments)
  do not notice.

  Args:
    keys: ``[n]`` or ``[n, k]`` integer keys.
    where: optional ``[n]`` bool mask.

  Returns:
    ``(ids, num_segments)``: ``[n]`` int32 ids and the static bound
    ``TABLE_FACTOR * n`` to pass to the reductions.

  >>> import jax.numpy as jnp
  >>> ids, bound = packed_segment_ids(jnp.array([[0, 5], [1, 4], [0, 5], [0, 4]]))
  >>> print(ids, bound)  # list * 2 + (segment - 4)
  [1 2 1 0] 8
  """
  keys = _keys_matrix(keys, "keys")
  # The bound is static (a shape), so only the ids are computed under jit.
  return _packed_ids(keys, _check_where(where, keys.shape[0])), TABLE_FACTOR * keys.shape[0]


@jax.jit
def _packed_ids(keys: Array, valid: Array) -> Array:
  n = keys.shape[0]
  table_size = TABLE_FACTOR * n
  if n == 0:
    return jnp.zeros((0,), jnp.int32)
  low, radix, fits = _table_radices(keys, valid, table_size)

  def packed():
    digits = jnp.where(valid[:, None], keys - low, 0)
    ids = jnp.zeros((n,), jnp.int32)
    for column in range(keys.shape[1]):
      ids = ids * radix[column] + digits[:, column]
    return ids

  def sorted_ids():
    return _sorted_prefix_ids(keys, valid, 0, keys.shape[1])[0][-1]

  ids = jax.lax.cond(fits, packed, sorted_ids)
  return jnp.where(valid, ids, table_size)


# Largest number of possible (list, code prefix) keys for which prefix ids are
# computed by counting into a table instead of sorting.
DIRECT_PREFIX_LIMIT = 1 << 16


@functools.partial(jax.jit, static_argnames=("codebook_size", "num_lists"))
def code_prefix_ids(
    codes: Array,
    *,
    codebook_size: int,
    where: Optional[Array] = None,
    list_ids: Optional[Array] = None,
    num_lists: int = 1,
) -> Tuple[Array, Array]:
  r""":func:`prefix_segment_ids` for codes known to lie in ``[0, codebook_size)``, without a sort.

  Level ``l`` packs ``(list id, c_1, .., c_l)`` into one integer in
  ``[0, num_lists * K**l)``. When ``num_lists * K**L`` is at most
  :data:`DIRECT_PREFIX_LIMIT` (e.g. K = 16, L = 4 in one list) rows are counted
  into a table of that size and the occupied entries are numbered in order:
  O(n + K**L) work that XLA splits across devices as partial sums, instead of a
  sort of the whole (possibly sharded) batch. Larger key spaces fall back to
  :func:`prefix_segment_ids`. Either way the result is the same.

  The codes are trusted: an eager caller should check the range first (the
  losses do); under ``jit`` values outside ``[0, K)`` are clipped into it.

  Args:
    codes: ``[n, L]`` integer codes in ``[0, codebook_size)``.
    codebook_size: K, static.
    where: optional ``[n]`` bool mask; masked rows get id ``n``.
    list_ids: optional ``[n]`` int list index in ``[0, num_lists)`` that splits
      groups further (rows of different lists never share a group).
    num_lists: static number of lists.

  Returns:
    ``(ids, num_groups)`` as :func:`prefix_segment_ids`: ``[L, n]`` int32 ids
    numbered ``0 .. G_l - 1`` in sorted key order (masked rows ``n``) and ``[L]``
    int32 counts of occupied groups among valid rows.
  """
  codes = _keys_matrix(codes, "codes")
  n, num_levels = codes.shape
  valid = _check_where(where, n)
  if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
    raise ValueError(f"codebook_size must be an int >= 1, got {codebook_size!r}")
  if num_lists * codebook_size**num_levels > DIRECT_PREFIX_LIMIT:
    outer = None if list_ids is None else jnp.asarray(list_ids)
    return prefix_segment_ids(codes, where=valid, outer_keys=outer)
  codes = jnp.clip(codes, 0, codebook_size - 1)
  packed = (jnp.zeros((n,), jnp.int32) if list_ids is None
            else jnp.clip(jnp.asarray(list_ids).astype(jnp.int32), 0, num_lists - 1))
  all_ids, counts = [], []
  for level in range(num_levels):
    packed = packed * codebook_size + codes[:, level]
    size = num_lists * codebook_size**(level + 1)
    occupied = jax.ops.segment_sum(valid.astype(jnp.int32), packed, num_segments=size) > 0
    rank = jnp.cumsum(occupied.astype(jnp.int32)) - 1
    all_ids.append(jnp.where(valid, rank[packed], n))
    counts.append(jnp.sum(occupied.astype(jnp.int32)))
  return jnp.stack(all_ids).astype(jnp.int32), jnp.stack(counts).astype(jnp.int32)


@jax.jit
def dense_segment_ids(
    keys: Array, *, where: Optional[Array] = None
) -> Tuple[Array, Array]:
  """Dense ids ``0 .. S-1`` for rows with equal keys, in sorted key order.

  Small integer keys (e.g. ``[list, segment]`` columns whose packed range is at
  most ``TABLE_FACTOR * n``) are counted into a table; others are sorted (see
  :func:`prefix_segment_ids`).

  Args:
    keys: ``[n]`` integer keys or ``[n, k]`` composite keys (rows equal in all
      ``k`` columns share an id).
    where: optional ``[n]`` bool mask; masked rows get id ``n``.

  Returns:
    ``(ids, num_segments)``: ``[n]`` int32 ids and the scalar number of
    distinct keys among valid rows. ``n`` is a static upper bound for the
    latter, so pass ``num_segments=n`` to the reductions below.

  >>> import jax.numpy as jnp
  >>> ids, count = dense_segment_ids(jnp.array([70, 3, 70, 9]))
  >>> print(ids, count)
  [2 0 2 1] 3
  """
  keys = _keys_matrix(keys, "keys")
  ids, counts = prefix_segment_ids(keys, where=where)
  # Grouping by all k columns is the deepest prefix level.
  return ids[-1], counts[-1]
