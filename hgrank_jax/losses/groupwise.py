"""Hierarchical group-wise ranking loss (GroupCE, paper Eq. 9).

Users are grouped by prefixes of their hierarchical codes: at level ``l`` the
rows whose first ``l`` codes agree form one group, and ListCE (Eq. 8) is applied
within every group. Deeper levels hold more similar users and so harder
negatives. Levels are balanced by learned uncertainties (Kendall et al.):
``sum_l exp(-2 log_sigma_l) / 2 * ListCE_l + log_sigma_l``.

Group ids come from one lexicographic sort of the code matrix
(:func:`hgrank_jax.ops.segments.prefix_segment_ids`), so time is O(n log n) and
memory O(n) in the batch size, independent of the ``K**L`` possible prefixes.
When the caller passes ``codebook_size`` and ``K**L`` is small (the paper's grid:
K <= 32, L <= 4 mostly qualifies), rows are instead counted into a ``K**l``
table (:func:`hgrank_jax.ops.segments.code_prefix_ids`), which avoids sorting a
batch that may be sharded across devices.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.losses import _common
from hgrank_jax.losses.listwise import LABEL_EPSILON
from hgrank_jax.losses.listwise import segment_cross_entropy
from hgrank_jax.ops import segments as seg

Array = jax.Array


def _check_codes_static(codes, list_shape):
  """Trace-time checks of the codes' dtype and shape."""
  if not jnp.issubdtype(codes.dtype, jnp.integer):
    raise TypeError(f"codes must hold integers, got dtype {codes.dtype}")
  if codes.ndim != len(list_shape) + 1 or codes.shape[:-1] != tuple(list_shape):
    raise ValueError(
        f"codes must have shape {tuple(list_shape)} + (L,) to match logits, "
        f"got {codes.shape}")
  if codes.shape[-1] < 1:
    raise ValueError("codes must have at least one level (L >= 1), got "
                     f"shape {codes.shape}")


def _check_code_values(codes, codebook_size: Optional[int]):
  """Eager range check; under jit values are unknown and grouping by sorting
  stays well defined for any integer code, so nothing is checked there."""
  if (not _common.is_concrete(codes) or not np.size(codes)
      or not jnp.issubdtype(jnp.result_type(codes), jnp.integer)):
    return  # Dtype problems are reported by the trace-time check.
  values = np.asarray(codes)
  low, high = int(values.min()), int(values.max())
  if low < 0 or (codebook_size is not None and high >= codebook_size):
    bound = f"[0, {codebook_size})" if codebook_size is not None else "[0, K)"
    raise ValueError(
        f"codes must lie in {bound}, got values from {low} to {high}")


def _level_ids(flat_codes, flat_valid, list_index, num_lists, segments, codebook_size):
  """``[L, n]`` group ids of every level: counted into a ``K**l`` table when K is
  known (and no ``segments`` split the groups further), found by sorting otherwise."""
  if codebook_size is not None and segments is None:
    ids, _ = seg.code_prefix_ids(flat_codes, codebook_size=codebook_size, where=flat_valid,
                                 list_ids=list_index, num_lists=num_lists)
    return ids
  outer = [list_index]
  if segments is not None:
    outer.append(segments.reshape(-1).astype(jnp.int32))
  ids, _ = seg.prefix_segment_ids(flat_codes, where=flat_valid, outer_keys=jnp.stack(outer, axis=1))
  return ids


@functools.partial(jax.jit, static_argnames=("eps", "codebook_size"))
def _per_level_list_ce(logits, labels, codes, where, segments, eps, codebook_size=None,
                       group_ids=None):
  logits, labels, valid, segments = _common.prepare(logits, labels, where,
                                                    segments)
  codes = jnp.asarray(codes)
  _check_codes_static(codes, logits.shape)
  num_levels = codes.shape[-1]
  total = int(np.prod(logits.shape))
  list_size = logits.shape[-1]
  num_lists = total // list_size if list_size else 0
  flat_valid = valid.reshape(-1)
  if group_ids is not None:
    if group_ids.shape != (num_levels, total):
      raise ValueError(f"group_ids must have shape {(num_levels, total)} ([L, rows]), got "
                       f"{group_ids.shape}")
    level_ids = jnp.where(flat_valid[None, :], group_ids, total)
  else:
    list_index = jnp.repeat(jnp.arange(num_lists, dtype=jnp.int32), list_size)
    level_ids = _level_ids(codes.reshape(total, num_levels), flat_valid, list_index,
                           max(num_lists, 1), segments, codebook_size)
  log_scores = jax.nn.log_sigmoid(logits).reshape(-1)
  flat_labels = labels.reshape(-1)
  num_segments = max(total, 1)
  return jnp.stack([
      segment_cross_entropy(log_scores, flat_labels, level_ids[level],
                            num_segments, where=flat_valid, eps=eps)
      for level in range(num_levels)
  ])


def per_level_list_ce(
    logits: Array,
    labels: Array,
    *,
    codes: Array,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
    codebook_size: Optional[int] = None,
    eps: float = LABEL_EPSILON,
    group_ids: Optional[Array] = None,
) -> Array:
  r"""ListCE within code-prefix groups, one value per level: ``[L]``.

  Entry :math:`l-1` is Eq. 8 with groups :math:`G^{(l)}_m` = rows whose first
  :math:`l` codes agree (and, when given, whose ``segments`` agree and which
  sit in the same leading-axis list).

  Args:
    logits: ``[..., n]`` float logits.
    labels: ``[..., n]`` non-negative labels.
    codes: ``[..., n, L]`` integer user codes in ``[0, K)``.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids that split every group further.
    codebook_size: optional K; when given and ``codes`` is concrete, values are
      checked against ``[0, K)`` (negative codes are always rejected eagerly).
      It also lets groups be found by counting into a ``K**l`` table rather
      than by sorting the batch when ``num_lists * K**L`` is small (see
      :func:`hgrank_jax.ops.segments.code_prefix_ids`); under ``jit`` the codes
      are then trusted to lie in ``[0, K)`` (values outside are clipped).
    eps: label normaliser :math:`\epsilon`.
    group_ids: optional ``[L, rows]`` int ids of every level's groups over the
      flattened rows, already found (e.g. ``RVQOutput.group_ids``, which
      :class:`~hgrank_jax.models.ResidualVQ` computes for its statistics);
      they must group rows as the codes (and lists, ``segments``) would, and
      lie in ``[0, rows)``; rows masked by ``where`` are dropped whatever their
      id. Skips the grouping.

  Returns:
    ``[L]`` array of per-level ListCE values.

  >>> import jax.numpy as jnp
  >>> codes = jnp.array([[0, 0], [0, 1], [1, 0], [1, 0]])
  >>> values = per_level_list_ce(jnp.zeros(4), jnp.array([1., 0., 1., 0.]),
  ...                            codes=codes)
  >>> print([round(float(v), 4) for v in values])  # level 2: {0}, {1}, {2, 3}
  [0.6931, 0.231]
  """
  if codebook_size is not None and (
      isinstance(codebook_size, bool)
      or not isinstance(codebook_size, (int, np.integer)) or codebook_size < 1):
    raise ValueError(f"codebook_size must be an int >= 1, got {codebook_size}")
  _check_code_values(codes, codebook_size)
  return _per_level_list_ce(logits, labels, codes, where, segments, eps,
                            codebook_size=None if codebook_size is None else int(codebook_size),
                            group_ids=None if group_ids is None else jnp.asarray(group_ids))


def negative_hardness_per_level(
    logits: Array,
    labels: Array,
    *,
    codes: Array,
    where: Optional[Array] = None,
    codebook_size: Optional[int] = None,
    eps: float = LABEL_EPSILON,
) -> dict:
  r"""How hard the negatives of each level's groups are: the "harder negatives" report.

  The paper argues that deeper levels (smaller groups of more similar users)
  confront a positive with harder negatives. For each level ``l`` this measures,
  on one batch:

  * ``neg_grad``: the mean over valid negatives (label 0) of
    :math:`|\partial\,\mathrm{ListCE}^{(l)} / \partial s_i|`, the gradient of
    that level's loss on the negative's logit (a level whose loss pushes
    negatives down harder has larger values; it includes the level's
    ``1/M_l`` average over groups);
  * ``neg_grad_per_group``: the same times the number of occupied groups
    ``M_l``, i.e. the push per group, comparable across levels of different
    group counts;
  * ``neg_logit``: the mean logit of valid negatives that share a level-``l``
    group with at least one positive (the negatives the loss contrasts with a
    positive); ``pos_logit``: the mean logit of the positives in those groups.

  Nothing here feeds the training loss: the logits are behind
  ``stop_gradient``.

  Args:
    logits: ``[n]`` float logits (one flat batch).
    labels: ``[n]`` labels in [0, 1]; a row is a negative when its label is 0.
    codes: ``[n, L]`` int codes in ``[0, K)``.
    where: optional ``[n]`` bool mask.
    codebook_size: optional K (grouping without a sort, as in :func:`group_ce`).
    eps: label normaliser of ListCE.

  Returns:
    dict of ``[L]`` float32 arrays: ``neg_grad``, ``neg_grad_per_group``,
    ``neg_logit`` and ``pos_logit`` (NaN where a level has no such row).
  """
  logits = jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32))
  labels = jnp.asarray(labels, jnp.float32)
  codes = jnp.asarray(codes)
  if logits.ndim != 1 or codes.ndim != 2 or codes.shape[0] != logits.shape[0]:
    raise ValueError(f"negative_hardness_per_level: expected logits [n] and codes [n, L], got "
                     f"{logits.shape} and {codes.shape}")
  n, num_levels = codes.shape
  valid = jnp.ones((n,), bool) if where is None else jnp.asarray(where, bool)
  level_grads = jax.jacrev(lambda s: _per_level_list_ce(
      s, labels, codes, valid, None, eps,
      codebook_size=None if codebook_size is None else int(codebook_size)))(logits)  # [L, n]
  if codebook_size is not None:
    ids, num_groups = seg.code_prefix_ids(codes, codebook_size=int(codebook_size), where=valid)
  else:
    ids, num_groups = seg.prefix_segment_ids(codes, where=valid)
  negative = valid & (labels == 0)
  positive = valid & (labels > 0)
  nan = jnp.float32(jnp.nan)

  def masked_mean(values, mask):
    count = jnp.sum(mask)
    return jnp.where(count > 0, jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1), nan)

  out = {"neg_grad": [], "neg_grad_per_group": [], "neg_logit": [], "pos_logit": []}
  for level in range(num_levels):
    grad = jnp.abs(level_grads[level])
    positives_in_group = jax.ops.segment_sum(positive.astype(jnp.int32), ids[level],
                                             num_segments=n + 1)
    contrasted = negative & (positives_in_group[ids[level]] > 0)
    contrasting = positive & (positives_in_group[ids[level]] > 0)
    out["neg_grad"].append(masked_mean(grad, negative))
    out["neg_grad_per_group"].append(masked_mean(grad, negative) * num_groups[level])
    out["neg_logit"].append(masked_mean(logits, contrasted))
    out["pos_logit"].append(masked_mean(logits, contrasting))
  return {k: jnp.stack(v).astype(jnp.float32) for k, v in out.items()}


@jax.jit
def uncertainty_weighted_sum(level_losses: Array, log_sigma: Array) -> Array:
  r"""Kendall-style weighting :math:`\sum_l e^{-2\log\sigma_l}/2 \cdot L_l +
  \log\sigma_l`.

  For fixed :math:`L_l > 0` the minimum over :math:`\log\sigma_l` is at
  :math:`\sigma_l^2 = L_l`. If some :math:`L_l = 0` (for example a batch
  without positives) the term decreases without bound in :math:`\log\sigma_l`,
  as in Eq. 9 itself.

  >>> import jax.numpy as jnp
  >>> print(uncertainty_weighted_sum(jnp.array([2., 4.]), jnp.zeros(2)))
  3.0
  """
  level_losses = jnp.asarray(level_losses)
  log_sigma = jnp.asarray(log_sigma)
  _common.check_same_shape("log_sigma", log_sigma, level_losses.shape,
                           "the number of code levels")
  return jnp.sum(0.5 * jnp.exp(-2.0 * log_sigma) * level_losses + log_sigma)


def group_ce(
    logits: Array,
    labels: Array,
    *,
    codes: Array,
    log_sigma: Array,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
    codebook_size: Optional[int] = None,
    eps: float = LABEL_EPSILON,
    group_ids: Optional[Array] = None,
) -> Array:
  r"""Hierarchical group-wise ListCE with uncertainty weights (paper Eq. 9).

  .. math::
      \mathcal{L} = \sum_{l=1}^{L} \Big(\frac{1}{2\sigma_l^2}
                    \mathrm{ListCE}^{(l)}(s, y) + \log\sigma_l\Big),
      \qquad \frac{1}{2\sigma_l^2} = \tfrac12 e^{-2\log\sigma_l}

  where :math:`\mathrm{ListCE}^{(l)}` (Eq. 8, :func:`per_level_list_ce`) groups
  rows whose first :math:`l` codes agree. There is no whole-batch level
  :math:`l = 0`; add :func:`list_ce` separately if you want one.

  Args:
    logits: ``[..., n]`` float logits.
    labels: ``[..., n]`` non-negative labels.
    codes: ``[..., n, L]`` integer codes in ``[0, K)``, e.g. from ResidualVQ.
    log_sigma: ``[L]`` float learnable :math:`\log\sigma_l` (0 gives weight
      1/2 per level).
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids that split every group further.
    codebook_size: optional K: an eager range check of ``codes`` and, for small
      ``K**L``, grouping without a sort (see :func:`per_level_list_ce`).
    eps: label normaliser :math:`\epsilon`.
    group_ids: optional precomputed ``[L, rows]`` group ids (see
      :func:`per_level_list_ce`).

  Returns:
    Scalar loss. With every row masked each ListCE is 0 and the result is
    :math:`\sum_l \log\sigma_l` (0 at the default ``log_sigma = 0``).

  >>> import jax.numpy as jnp
  >>> codes = jnp.array([[0, 0], [0, 1], [1, 0], [1, 0]])
  >>> loss = group_ce(jnp.zeros(4), jnp.array([1., 0., 1., 0.]), codes=codes,
  ...                 log_sigma=jnp.zeros(2))
  >>> print(round(float(loss), 4))  # (0.6931 + 0.2310) / 2
  0.4621
  """
  log_sigma = jnp.asarray(log_sigma)
  codes_shape = jnp.shape(codes)
  if log_sigma.ndim != 1 or (codes_shape and
                             log_sigma.shape[0] != codes_shape[-1]):
    raise ValueError(
        "log_sigma must have shape (L,) with L = codes.shape[-1] = "
        f"{codes_shape[-1] if codes_shape else '?'}, got {log_sigma.shape}")
  level_losses = per_level_list_ce(
      logits, labels, codes=codes, where=where, segments=segments,
      codebook_size=codebook_size, eps=eps, group_ids=group_ids)
  return uncertainty_weighted_sum(level_losses, log_sigma.astype(
      level_losses.dtype))
