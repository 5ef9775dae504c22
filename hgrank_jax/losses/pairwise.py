"""Pairwise logistic (RankNet) loss, the in-batch pairwise baseline of Table 1.

The values are those of ``rax.pairwise_logistic_loss`` (mean over valid pairs),
but no ``n x n`` array is built. Rows are sorted once by (list and segment,
label descending), so every pair that counts, ``y_i > y_j`` in one segment,
has ``i`` before ``j`` and ``j`` inside ``i``'s segment. When every segment is
short (at most ``SHIFT_LIMIT`` rows) the pairs are ``(r, r + k)`` for offsets
``k`` below the longest segment, one shifted-vector step per offset. Otherwise
the sorted rows are cut into blocks of ``block`` rows; each block is compared
only with the window of columns where its pairs can lie (after its first row's
ties, up to the end of its last segment), one ``block x block`` tile at a time
in a loop. Either way the gradient is accumulated in the same pass (a custom
VJP), and memory is ``O(n + block**2)``. Work follows the pairs that exist:
``n`` times the longest segment for short segments, about ``P * (n - P)`` for
one list of ``n`` binary labels with ``P`` positives, never all ``n**2``. The
sort goes through :func:`hgrank_jax.ops.stable_order.stable_order` (on the host
on CPU) and is the largest part of the cost for small segments.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from hgrank_jax.losses import _common
from hgrank_jax.ops.stable_order import stable_order

Array = jax.Array

# Tile side when segments split the lists (small windows, short tiles waste
# little) and when each list is one window (fewer, larger tiles: less loop
# overhead per pair).
SEGMENT_BLOCK = 32
LIST_BLOCK = 256
# Groups of at most this many rows are compared as shifted vectors instead.
SHIFT_LIMIT = 64


def _softplus_and_sigmoid(d):
  """``log(1 + e^d)`` and ``sigmoid(d)`` from one ``exp``, stable for any ``d``."""
  e = jnp.exp(-jnp.abs(d))
  softplus = jnp.maximum(d, 0.0) + jnp.log1p(e)
  sigmoid = jnp.where(d >= 0, 1.0, e) / (1.0 + e)
  return softplus, sigmoid


def _tile_sums(s, y, group, ok, tie_end, group_end, block, with_grad):
  """Sum of ``softplus(s_j - s_i)`` over sorted pairs, and its gradient in ``s``.

  All arrays are sorted and padded to a multiple of ``block`` plus one block of
  invalid rows (``ok`` False), so every window slice stays in bounds.
  """
  n_pad = s.shape[0]
  num_blocks = n_pad // block - 1
  dtype = s.dtype

  def row_block(b, carry):
    total, grad = carry
    i0 = b * block
    s_i = jax.lax.dynamic_slice(s, (i0,), (block,))
    y_i = jax.lax.dynamic_slice(y, (i0,), (block,))
    g_i = jax.lax.dynamic_slice(group, (i0,), (block,))
    ok_i = jax.lax.dynamic_slice(ok, (i0,), (block,))
    # Pairs of row i lie in [tie_end[i], group_end[i]); both are nondecreasing.
    start = jnp.min(jnp.where(ok_i, jax.lax.dynamic_slice(tie_end, (i0,), (block,)), n_pad))
    stop = jnp.max(jnp.where(ok_i, jax.lax.dynamic_slice(group_end, (i0,), (block,)), 0))

    def tile(state):
      j0, total, grad, grad_i = state
      s_j = jax.lax.dynamic_slice(s, (j0,), (block,))
      y_j = jax.lax.dynamic_slice(y, (j0,), (block,))
      g_j = jax.lax.dynamic_slice(group, (j0,), (block,))
      ok_j = jax.lax.dynamic_slice(ok, (j0,), (block,))
      pair = ((g_i[:, None] == g_j[None, :]) & (y_i[:, None] > y_j[None, :])
              & ok_i[:, None] & ok_j[None, :])
      d = s_j[None, :] - s_i[:, None]
      softplus, sigmoid = _softplus_and_sigmoid(d)
      total = total + jnp.sum(jnp.where(pair, softplus, 0.0))
      if with_grad:
        sigmoid = jnp.where(pair, sigmoid, 0.0)
        grad_i = grad_i - jnp.sum(sigmoid, axis=1)
        column = jax.lax.dynamic_slice(grad, (j0,), (block,)) + jnp.sum(sigmoid, axis=0)
        grad = jax.lax.dynamic_update_slice(grad, column, (j0,))
      return j0 + block, total, grad, grad_i

    # Windows start anywhere; clamp so a slice never runs past the padding.
    j0 = jnp.minimum(start, n_pad - block)
    _, total, grad, grad_i = jax.lax.while_loop(
        lambda state: state[0] < stop, tile,
        (j0, total, grad, jnp.zeros((block,), dtype)))
    if with_grad:
      grad = jax.lax.dynamic_update_slice(
          grad, jax.lax.dynamic_slice(grad, (i0,), (block,)) + grad_i, (i0,))
    return total, grad

  return jax.lax.fori_loop(0, num_blocks, row_block,
                           (jnp.zeros((), dtype), jnp.zeros((n_pad,), dtype)))


def _shift_sums(s, y, group, ok, width, with_grad):
  """Same sums as :func:`_tile_sums` for short groups: pairs ``(r, r + k)``.

  Sorted, the pairs of row ``r`` are among rows ``r + 1 .. r + width - 1``, so
  one loop over the offset ``k`` compares whole shifted vectors: ``n * width``
  evaluations in ``width`` vector steps, no per-block loop overhead.
  """
  n = s.shape[0]
  s_pad = jnp.pad(s, (0, n))
  y_pad = jnp.pad(y, (0, n))
  group_pad = jnp.pad(group, (0, n))
  ok_pad = jnp.pad(ok, (0, n))

  def offset(k, carry):
    total, grad_i, grad_j = carry
    s_j = jax.lax.dynamic_slice(s_pad, (k,), (n,))
    pair = (ok & jax.lax.dynamic_slice(ok_pad, (k,), (n,))
            & (group == jax.lax.dynamic_slice(group_pad, (k,), (n,)))
            & (y > jax.lax.dynamic_slice(y_pad, (k,), (n,))))
    softplus, sigmoid = _softplus_and_sigmoid(s_j - s)
    total = total + jnp.sum(jnp.where(pair, softplus, 0.0))
    if with_grad:
      sigmoid = jnp.where(pair, sigmoid, 0.0)
      grad_i = grad_i - sigmoid
      grad_j = jax.lax.dynamic_update_slice(
          grad_j, jax.lax.dynamic_slice(grad_j, (k,), (n,)) + sigmoid, (k,))
    return total, grad_i, grad_j

  total, grad_i, grad_j = jax.lax.fori_loop(
      1, width, offset, (jnp.zeros((), s.dtype), jnp.zeros((n,), s.dtype),
                         jnp.zeros((2 * n,), s.dtype)))
  return total, grad_i + grad_j[:n]


def _sums(s, y, group, ok, tie_end, group_end, block, with_grad):
  """Pair sum and gradient: shifted vectors for short groups, tiles otherwise."""
  rows = jnp.arange(s.shape[0], dtype=jnp.int32)
  width = jnp.max(jnp.where(ok, group_end - rows, 0))
  return jax.lax.cond(
      width <= SHIFT_LIMIT,
      lambda: _shift_sums(s, y, group, ok, width, with_grad),
      lambda: _tile_sums(s, y, group, ok, tie_end, group_end, block, with_grad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _pair_sum(s, y, group, ok, tie_end, group_end, block):
  return _sums(s, y, group, ok, tie_end, group_end, block, with_grad=False)[0]


def _pair_sum_fwd(s, y, group, ok, tie_end, group_end, block):
  total, grad = _sums(s, y, group, ok, tie_end, group_end, block, with_grad=True)
  return total, (grad, y, group, ok, tie_end, group_end)


def _pair_sum_bwd(block, residuals, cotangent):
  del block
  grad, y, group, ok, tie_end, group_end = residuals
  # Labels, ids and masks select pairs; the loss is flat in them almost everywhere.
  return (cotangent * grad, jnp.zeros_like(y), None, None, None, None)


_pair_sum.defvjp(_pair_sum_fwd, _pair_sum_bwd)


def _group_label_order(y, group, bound):
  """Order of rows by ``group`` ascending, then label ``y`` descending.

  Labels that are small non-negative integers (clicks, graded relevance) are
  packed with the group into one int32 key and sorted once; other labels take
  two stable sorts (label, then group). Both use :func:`stable_order`, whose
  CPU path sorts on the host several times faster than XLA's comparator sort.
  """
  top = jnp.max(y)
  packable = (jnp.all((y >= 0) & (y == jnp.round(y)))
              & (top < (2**31 - 1) // (bound + 1) - 1))

  def packed():
    top_int = top.astype(jnp.int32)
    key = group * (top_int + 1) + (top_int - y.astype(jnp.int32))
    return stable_order(key)[0]

  def two_sorts():
    by_label = stable_order(-y)[0]
    return by_label[stable_order(group[by_label])[0]]

  return jax.lax.cond(packable, packed, two_sorts)


def _next_change(changes):
  """For each row ``r``, the first index ``> r`` where ``changes`` is True (else n)."""
  n = changes.shape[0]
  index = jnp.arange(n, dtype=jnp.int32)
  marks = jnp.where(changes, index, n)
  following = jnp.concatenate([marks[1:], jnp.array([n], jnp.int32)])
  return jax.lax.cummin(following, reverse=True)


@jax.jit
def pairwise_logistic(
    logits: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
) -> Array:
  r"""Mean logistic loss over correctly ordered label pairs (RankNet).

  .. math::
      \ell(s, y) = \frac{1}{|P|} \sum_{(i, j) \in P} \log(1 + e^{-(s_i - s_j)}),
      \qquad P = \{(i, j) : y_i > y_j\}

  over valid pairs (both rows valid, same list, and same segment when
  ``segments`` is given), pooled over all lists. 0 when there is no such pair.
  Equal to ``rax.pairwise_logistic_loss`` (``reduce_fn=jnp.mean``), computed
  without ``n x n`` memory: one sort of the rows by (segment, label), then
  shifted-vector steps for short segments or ``block x block`` tiles only
  where pairs can lie (see the module docstring). A fully masked input, or
  one without a valid pair, gives 0 (Rax gives NaN there if some logit is NaN).
  The gradient with respect to ``logits`` is exact and is accumulated in the
  forward pass; labels get a zero gradient.

  Args:
    logits: ``[..., n]`` float logits.
    labels: ``[..., n]`` labels (any ordered relevance).
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids; only pairs within a segment count.

  Returns:
    Scalar loss, in the dtype of ``logits``.

  >>> import jax.numpy as jnp
  >>> loss = pairwise_logistic(jnp.array([1., 0., 0.]), jnp.array([1., 0., 0.]))
  >>> print(round(float(loss), 4))  # log(1 + e^-1)
  0.3133
  """
  logits, labels, valid, segments = _common.prepare(logits, labels, where,
                                                    segments)
  list_shape = logits.shape
  group, bound = _common.list_segment_ids(list_shape, valid, segments)
  s = logits.reshape(-1)
  y = jax.lax.stop_gradient(labels.reshape(-1))
  ok = valid.reshape(-1)
  n = s.shape[0]
  if n == 0:
    return jnp.zeros((), logits.dtype)
  # Invalid rows go last, in a group of their own.
  group = jnp.where(ok, group, bound).astype(jnp.int32)
  order = _group_label_order(y, group, bound)
  s, y, group, ok = s[order], y[order], group[order], ok[order]

  new_group = jnp.concatenate([jnp.array([True]), group[1:] != group[:-1]])
  new_tie = new_group | jnp.concatenate([jnp.array([True]), y[1:] != y[:-1]])
  group_end = _next_change(new_group)
  tie_end = _next_change(new_tie)
  # Row i's pairs are the rows after its ties, up to the end of its group.
  count = jnp.sum(jnp.where(ok, group_end - tie_end, 0))

  block = SEGMENT_BLOCK if segments is not None else LIST_BLOCK
  block = max(1, min(block, n))
  pad = (-n) % block + block
  s = jnp.pad(s, (0, pad))
  y = jnp.pad(y, (0, pad))
  group = jnp.pad(group, (0, pad), constant_values=bound)
  ok = jnp.pad(ok, (0, pad))
  tie_end = jnp.pad(tie_end, (0, pad), constant_values=n)
  group_end = jnp.pad(group_end, (0, pad), constant_values=n)
  total = _pair_sum(s, y, group, ok, tie_end, group_end, block)
  return total / jnp.maximum(count, 1).astype(total.dtype)
