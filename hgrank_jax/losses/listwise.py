"""Listwise cross-entropy losses: ListCE (paper Eq. 8) and softmax CE.

Both are a cross-entropy between normalised labels and a distribution over the
rows of a list (or of a segment of it). They differ only in the score
transform: ListCE normalises ``sigmoid(s)``, which keeps it compatible with the
log loss (its optimum is a calibrated sigmoid), while softmax CE normalises
``exp(s)``. Segment versions use O(n) segment reductions from
:mod:`hgrank_jax.ops.segments` rather than the ``n x n`` same-segment masks that
Rax builds for ``segments=``, because the paper's groups are formed from a whole
batch of thousands of rows.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import rax

from hgrank_jax.losses import _common
from hgrank_jax.ops import segments as seg

Array = jax.Array

# Label normaliser from Eq. 8: y_i / (sum_j y_j + eps).
LABEL_EPSILON = 1e-8


@functools.partial(jax.jit, static_argnames=("num_segments", "eps"))
def segment_cross_entropy(
    log_scores: Array,
    labels: Array,
    segment_ids: Array,
    num_segments: int,
    *,
    where: Array,
    eps: float = LABEL_EPSILON,
) -> Array:
  r"""Mean over occupied segments of the label-normalised cross-entropy.

  For segment :math:`m` with rows :math:`G_m`,
  :math:`\ell_m = -\sum_{i \in G_m} \tilde y_i \big(a_i - \log\sum_{j \in G_m}
  e^{a_j}\big)` with
  :math:`\tilde y_i = y_i / (\sum_{j \in G_m} y_j + \epsilon)`
  and :math:`a` = ``log_scores``. Returns :math:`\frac{1}{M}\sum_m \ell_m` over
  the :math:`M` segments holding at least one valid row; a segment without a
  positive adds 0 but still counts in :math:`M`. 0 when no row is valid.

  Args:
    log_scores: ``[n]`` unnormalised log-probabilities :math:`a_i`.
    labels: ``[n]`` non-negative labels (masked rows may hold anything).
    segment_ids: ``[n]`` ints; ids outside ``[0, num_segments)`` are dropped.
    num_segments: static bound on the number of segments.
    where: ``[n]`` bool mask of valid rows.
    eps: the :math:`\epsilon` of the label normaliser.

  Returns:
    Scalar loss.

  >>> import jax.numpy as jnp
  >>> loss = segment_cross_entropy(jnp.zeros(3), jnp.array([1., 0., 0.]),
  ...                              jnp.array([0, 0, 1]), 2,
  ...                              where=jnp.ones(3, bool))
  >>> print(round(float(loss), 4))  # (log 2 + 0) / 2 segments
  0.3466
  """
  labels = jnp.where(where, labels, 0.0)
  log_norm = seg.segment_logsumexp(log_scores, segment_ids, num_segments,
                                   where=where)
  label_sum = seg.segment_sum(labels, segment_ids, num_segments, where=where)
  # sum_i y_i * a_i per segment; masked rows have y = 0 but a may be -inf, so
  # zero the product explicitly.
  label_dot = seg.segment_sum(
      jnp.where(where, labels * log_scores, 0.0), segment_ids, num_segments,
      where=where)
  occupied = seg.segment_count(segment_ids, num_segments, where=where) > 0
  log_norm = jnp.where(occupied, log_norm, 0.0)
  per_segment = -(label_dot - label_sum * log_norm) / (label_sum + eps)
  per_segment = jnp.where(occupied, per_segment, 0.0)
  num_occupied = jnp.sum(occupied)
  return jnp.sum(per_segment) / jnp.maximum(num_occupied, 1).astype(
      per_segment.dtype)


@functools.partial(jax.jit, static_argnames=("eps",))
def list_ce(
    logits: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
    eps: float = LABEL_EPSILON,
) -> Array:
  r"""Regression-compatible listwise cross-entropy (ListCE, paper Eq. 8).

  Within each segment :math:`G_m`,
  :math:`p_i = \sigma(s_i) / \sum_{j \in G_m} \sigma(s_j)` and
  :math:`\tilde y_i = y_i / (\sum_{j \in G_m} y_j + \epsilon)`; then

  .. math::
      \ell(s, y) = \frac{1}{M} \sum_{m=1}^{M} \sum_{i \in G_m}
                   -\tilde y_i \log p_i

  where :math:`M` counts the segments holding at least one valid row. A segment
  without a positive contributes 0 yet still counts in :math:`M`, as Eq. 8
  divides by :math:`M_l`. This is the softmax cross-entropy of the log-sigmoid
  scores. O(n) memory; O(n) time without ``segments`` or when the segment ids
  span a small range (``list * S + segment`` is the segment id), O(n log n)
  otherwise (ids are made dense by sorting).

  Args:
    logits: ``[..., n]`` float logits; each leading index is its own list.
    labels: ``[..., n]`` non-negative labels.
    where: optional ``[..., n]`` bool mask of valid rows.
    segments: optional ``[..., n]`` int ids; rows of a list with equal ids
      form a segment. Without it each list is one segment (the in-batch
      baseline of Table 1 when the batch is one list).
    eps: the :math:`\epsilon` of the label normaliser (1e-8 as in the paper).

  Returns:
    Scalar loss; 0 for a fully masked input.

  >>> import jax.numpy as jnp
  >>> logits = jnp.array([2., 0., -1., 1.])
  >>> labels = jnp.array([1., 0., 0., 0.])
  >>> print(round(float(list_ce(logits, labels,
  ...                           segments=jnp.array([0, 0, 0, 1]))), 4))
  0.3138
  """
  logits, labels, valid, segments = _common.prepare(logits, labels, where,
                                                    segments)
  ids, num_segments = _common.list_segment_ids(logits.shape, valid, segments)
  return segment_cross_entropy(
      jax.nn.log_sigmoid(logits).reshape(-1), labels.reshape(-1), ids,
      num_segments, where=valid.reshape(-1), eps=eps)


def _normalise_labels(labels: Array, where: Optional[Array] = None,
                      eps: float = LABEL_EPSILON) -> Array:
  # Same label normaliser as ListCE; unlike rax.utils.normalize_probabilities
  # it maps an all-zero list to all zeros (no fake uniform target).
  if where is not None:
    labels = jnp.where(where, labels, 0.0)
  return labels / (jnp.sum(labels, axis=-1, keepdims=True) + eps)


@functools.partial(jax.jit, static_argnames=("eps",))
def softmax_ce(
    logits: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
    eps: float = LABEL_EPSILON,
) -> Array:
  r"""Softmax cross-entropy with ListCE's label normalisation (Table 1).

  .. math::
      \ell(s, y) = \frac{1}{M} \sum_{m} \sum_{i \in G_m} -\tilde y_i
                   \log \frac{e^{s_i}}{\sum_{j \in G_m} e^{s_j}},
      \qquad \tilde y_i = \frac{y_i}{\sum_{j \in G_m} y_j + \epsilon}

  with the same segment and :math:`M` conventions as :func:`list_ce`. Without
  ``segments`` this calls ``rax.softmax_loss`` (each list one segment); with
  ``segments`` it uses O(n) segment reductions instead of Rax's ``n x n`` mask.

  Args:
    logits: ``[..., n]`` float logits.
    labels: ``[..., n]`` non-negative labels.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int segment ids within each list.
    eps: label normaliser :math:`\epsilon`.

  Returns:
    Scalar loss; 0 for a fully masked input.

  >>> import jax.numpy as jnp
  >>> print(round(float(softmax_ce(jnp.array([0., 0.]), jnp.array([1., 0.]))),
  ...             4))
  0.6931
  """
  logits, labels, valid, segments = _common.prepare(logits, labels, where,
                                                    segments)
  if segments is None:
    return rax.softmax_loss(
        logits, labels, where=valid,
        label_fn=lambda y, where: _normalise_labels(y, where, eps))
  ids, num_segments = _common.list_segment_ids(logits.shape, valid, segments)
  return segment_cross_entropy(
      logits.reshape(-1), labels.reshape(-1), ids, num_segments,
      where=valid.reshape(-1), eps=eps)
