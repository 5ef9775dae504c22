"""CTR metrics of Table 1: LogLoss, AUC, GAUC, plus expected calibration error.

All four are exact (no histogram approximation of AUC) and O(n log n): AUC and
GAUC come from a single lexicographic sort by (group, score) and the
Mann-Whitney count, with tied scores counting one half, as scikit-learn does.
The JAX functions are jit-compatible (masks go through ``where``; every shape
is static) and return NaN where a metric is undefined (no valid row, one class
only). They accumulate in the default float dtype, float32 unless x64 is
enabled, which keeps them within ~1e-6 of scikit-learn at training-batch sizes.
For evaluation sets of hundreds of thousands of rows use :func:`ctr_metrics`,
an eager numpy float64 path that computes everything from one sort, or, when the
split already lives on the device, :func:`device_ctr_metrics`, its jitted twin
(the train loop's evaluation on an accelerator: no logits leave the device).
"""

import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.ops import segments as seg

Array = jax.Array


def _prepare(name: str, values, labels, where):
  values = jnp.asarray(values)
  if values.ndim != 1:
    raise ValueError(f"{name} must be one-dimensional [n], got shape "
                     f"{values.shape}")
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.result_type(float))
  if jnp.shape(labels) != values.shape:
    raise ValueError(f"labels must have the same shape as {name} "
                     f"{values.shape}, got {jnp.shape(labels)}")
  if where is None:
    valid = jnp.ones(values.shape, jnp.bool_)
  else:
    if jnp.shape(where) != values.shape:
      raise ValueError(f"where must have the same shape as {name} "
                       f"{values.shape}, got {jnp.shape(where)}")
    valid = jnp.asarray(where).astype(jnp.bool_)
  return values, jnp.asarray(labels), valid


def _accumulator_dtype():
  # float64 when the user enabled x64, float32 otherwise.
  return jnp.result_type(float)


@jax.jit
def logloss(logits: Array, labels: Array, *,
            where: Optional[Array] = None) -> Array:
  r"""Mean binary cross-entropy from logits (the LogLoss column of Table 1).

  .. math::
      \mathrm{LogLoss} = \frac{1}{N}\sum_i \log(1 + e^{s_i}) - y_i s_i

  over the :math:`N` valid rows; NaN when there is none.

  Args:
    logits: ``[n]`` float logits.
    labels: ``[n]`` labels in ``[0, 1]``.
    where: optional ``[n]`` bool mask.

  Returns:
    Scalar metric.

  >>> import jax.numpy as jnp
  >>> print(round(float(logloss(jnp.array([0., 0.]), jnp.array([1, 0]))), 4))
  0.6931
  """
  logits, labels, valid = _prepare("logits", logits, labels, where)
  dtype = _accumulator_dtype()
  logits = logits.astype(dtype)
  per_row = jax.nn.softplus(logits) - labels.astype(dtype) * logits
  count = jnp.sum(valid)
  total = jnp.sum(jnp.where(valid, per_row, 0.0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


_LOW_BITS = 10  # split of the per-group win counts into int32 high and low sums


def _grouped_auc(scores, positive, valid, groups):
  """Per-group Mann-Whitney AUC from one sort; shapes are static ``[n]``.

  Returns ``(auc, rows, qualifies)`` per dense group id (``[n]`` each; slots
  past the number of groups have ``rows = 0`` and ``qualifies = False``).
  """
  n = scores.shape[0]
  dtype = _accumulator_dtype()
  # Masked rows last, then by group, then by ascending score.
  order = jnp.lexsort([scores, groups, jnp.logical_not(valid)])
  s, g = scores[order], groups[order]
  pos, ok = positive[order] & valid[order], valid[order]
  neg = ok & ~pos
  first = jnp.arange(n) == 0
  new_group = first | (g != jnp.roll(g, 1)) | (ok != jnp.roll(ok, 1))
  new_block = new_group | (s != jnp.roll(s, 1))  # block = run of tied scores
  group_id = jnp.where(ok, jnp.cumsum(new_group) - 1, n)
  block_id = jnp.where(ok, jnp.cumsum(new_block) - 1, n)

  # Negatives strictly before each row in sorted order. Within a group the
  # negatives scored below a tie block are those before its first row.
  neg_before = jnp.cumsum(neg.astype(jnp.int32)) - neg.astype(jnp.int32)
  block_start = seg.gather_segments(
      seg.segment_min(neg_before, block_id, n), block_id)
  group_start = seg.gather_segments(
      seg.segment_min(neg_before, group_id, n), group_id)
  neg_tied = seg.gather_segments(
      seg.segment_sum(neg.astype(jnp.int32), block_id, n), block_id)
  negatives = seg.segment_sum(neg.astype(jnp.int32), group_id, n)
  positives = seg.segment_sum(pos.astype(jnp.int32), group_id, n)
  # Each positive beats the lower negatives and ties half of the tied ones:
  # 2 * wins is an integer <= 2n. Summed per group in int32 as high and low
  # parts (neither overflows below 2M positives and 10^12 positive-negative
  # pairs), the count is exact and only the final division rounds, so a
  # float32 AUC of 10^5 rows stays within ~1e-7 (a float32 running sum of
  # per-row fractions drifted by 6e-6 at 2*10^4 rows).
  doubled = jnp.where(pos, 2 * (block_start - group_start) + neg_tied, 0)
  high = seg.segment_sum(doubled >> _LOW_BITS, group_id, n)
  low = seg.segment_sum(doubled & ((1 << _LOW_BITS) - 1), group_id, n)
  wins = high.astype(dtype) * (1 << _LOW_BITS) + low.astype(dtype)
  qualifies = (positives > 0) & (negatives > 0)
  pairs = 2 * jnp.maximum(positives, 1).astype(dtype) * jnp.maximum(negatives, 1).astype(dtype)
  auc = wins / pairs
  return auc, positives + negatives, qualifies


def _check_groups(groups, shape):
  groups = jnp.asarray(groups)
  if groups.shape != shape:
    raise ValueError(f"groups must have the same shape as scores {shape}, "
                     f"got {groups.shape}")
  if not jnp.issubdtype(groups.dtype, jnp.integer):
    raise TypeError(f"groups must hold integers, got dtype {groups.dtype}")
  return groups.astype(jnp.int32)


@jax.jit
def auc(scores: Array, labels: Array, *,
        where: Optional[Array] = None) -> Array:
  r"""Exact ROC AUC with ties counting one half.

  .. math::
      \mathrm{AUC} = \frac{1}{PN}\sum_{i: y_i = 1}\sum_{j: y_j = 0}
                     \big[\mathbb{1}(s_i > s_j) + \tfrac12\mathbb{1}(s_i = s_j)
                     \big]

  computed in O(n log n) from one sort. NaN when the valid rows hold only one
  class. Labels above 0.5 count as positive.

  Args:
    scores: ``[n]`` scores (logits or probabilities; only the order matters).
    labels: ``[n]`` binary labels.
    where: optional ``[n]`` bool mask.

  Returns:
    Scalar metric.

  >>> import jax.numpy as jnp
  >>> print(auc(jnp.array([0.1, 0.4, 0.4, 0.8]), jnp.array([0, 0, 1, 1])))
  0.875
  """
  scores, labels, valid = _prepare("scores", scores, labels, where)
  if scores.shape[0] == 0:  # Static: an empty input has no AUC.
    return jnp.array(jnp.nan, _accumulator_dtype())
  groups = jnp.zeros(scores.shape, jnp.int32)
  values, _, qualifies = _grouped_auc(scores, labels > 0.5, valid, groups)
  return jnp.where(qualifies[0], values[0], jnp.nan)


@jax.jit
def gauc(scores: Array, labels: Array, groups: Array, *,
         where: Optional[Array] = None) -> Array:
  r"""Group AUC: per-group AUC averaged with weights = group row counts.

  .. math::
      \mathrm{GAUC} = \frac{\sum_{g \in Q} n_g\,\mathrm{AUC}_g}
                           {\sum_{g \in Q} n_g}

  where :math:`Q` holds the groups (usually users) with both a positive and a
  negative valid row, and :math:`n_g` counts the group's valid rows. Groups
  with a single class are skipped; NaN when no group qualifies.

  Args:
    scores: ``[n]`` scores.
    labels: ``[n]`` binary labels (above 0.5 is positive).
    groups: ``[n]`` integer group ids (any values; made dense by sorting).
    where: optional ``[n]`` bool mask.

  Returns:
    Scalar metric.

  >>> import jax.numpy as jnp
  >>> scores = jnp.array([0.1, 0.9, 0.3, 0.2, 0.5])
  >>> labels = jnp.array([0, 1, 1, 0, 1])
  >>> print(gauc(scores, labels, jnp.array([7, 7, 3, 3, 5])))
  1.0
  """
  scores, labels, valid = _prepare("scores", scores, labels, where)
  groups = _check_groups(groups, scores.shape)
  values, rows, qualifies = _grouped_auc(scores, labels > 0.5, valid, groups)
  weights = jnp.where(qualifies, rows, 0).astype(values.dtype)
  total = jnp.sum(weights)
  return jnp.where(total > 0,
                   jnp.sum(weights * jnp.where(qualifies, values, 0.0))
                   / jnp.maximum(total, 1), jnp.nan)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def expected_calibration_error(probs: Array, labels: Array, *,
                               num_bins: int = 15,
                               where: Optional[Array] = None) -> Array:
  r"""Expected calibration error with equal-width probability bins.

  .. math::
      \mathrm{ECE} = \sum_b \frac{n_b}{N}\,\big|\bar p_b - \bar y_b\big|
                   = \frac{1}{N}\sum_b \Big|\sum_{i \in b} (p_i - y_i)\Big|

  Bins split ``[0, 1]`` into ``num_bins`` equal widths; a probability on an
  inner edge falls in the lower bin (scikit-learn's ``calibration_curve``
  convention, so its ``prob_true``/``prob_pred`` reproduce this value). NaN
  when no row is valid. Entries are pooled, so any shape works (e.g. a
  ``[days, users]`` grid of a blending simulation).

  Args:
    probs: ``[...]`` predicted probabilities in ``[0, 1]``.
    labels: ``[...]`` labels (or observed rates) in ``[0, 1]``, shaped as ``probs``.
    num_bins: static number of bins (>= 1).
    where: optional ``[...]`` bool mask, shaped as ``probs``.

  Returns:
    Scalar metric.

  >>> import jax.numpy as jnp
  >>> ece = expected_calibration_error(jnp.array([0.2, 0.3, 0.9]),
  ...                                  jnp.array([0, 1, 1]), num_bins=2)
  >>> print(round(float(ece), 4))  # (|0.5 - 1| + |0.9 - 1|) / 3
  0.2
  """
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or (
      num_bins < 1):
    raise ValueError(f"num_bins must be a static int >= 1, got {num_bins!r}")
  shape = jnp.shape(probs)
  for name, other in (("labels", labels), ("where", where)):
    if other is not None and jnp.shape(other) != shape:
      raise ValueError(f"{name} must have the same shape as probs {shape}, got "
                       f"{jnp.shape(other)}")
  probs, labels, valid = _prepare("probs", jnp.ravel(probs), jnp.ravel(labels),
                                  None if where is None else jnp.ravel(where))
  dtype = _accumulator_dtype()
  edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=probs.dtype)
  bins = jnp.searchsorted(edges[1:-1], probs, side="left")
  gaps = seg.segment_sum((probs - labels).astype(dtype), bins, num_bins,
                         where=valid)
  count = jnp.sum(valid)
  return jnp.where(count > 0, jnp.sum(jnp.abs(gaps)) / jnp.maximum(count, 1),
                   jnp.nan)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def device_ctr_metrics(logits: Array, labels: Array,
                       groups: Optional[Array] = None, *,
                       where: Optional[Array] = None,
                       num_bins: int = 15) -> Dict[str, Array]:
  r"""LogLoss, AUC, GAUC, ECE and counts in one jitted pass: :func:`ctr_metrics` on device.

  The same definitions as :func:`logloss`, :func:`auc`, :func:`gauc` and
  :func:`expected_calibration_error` (on :math:`\sigma(s)`), with the row and
  qualifying-group counts :func:`ctr_metrics` reports; AUC and GAUC come from
  sorts, exact up to float32 accumulation (~1e-6 at 10^5 rows unless x64).

  Args:
    logits: ``[n]`` logits.
    labels: ``[n]`` labels in {0, 1}.
    groups: optional ``[n]`` integer group ids (users) for GAUC; None gives NaN.
    where: optional ``[n]`` bool mask (e.g. the padding of a batched split).
    num_bins: ECE bins (static).

  Returns:
    dict of scalar arrays: ``logloss``, ``auc``, ``gauc``, ``ece``,
    ``num_rows``, ``num_gauc_groups`` and ``all_finite`` (False when a valid
    logit is not finite, where :func:`ctr_metrics` raises).

  >>> out = device_ctr_metrics(jnp.array([0., 2., -1., 1.]), jnp.array([0, 1, 0, 1]),
  ...                          jnp.array([1, 1, 2, 2]))
  >>> print(out["auc"], out["gauc"], out["num_gauc_groups"])
  1.0 1.0 2
  """
  logits, labels, valid = _prepare("logits", logits, labels, where)
  out = {"logloss": logloss(logits, labels, where=valid),
         "auc": auc(logits, labels, where=valid),
         "ece": expected_calibration_error(jax.nn.sigmoid(logits), labels,
                                           num_bins=num_bins, where=valid),
         "num_rows": jnp.sum(valid.astype(jnp.int32)),
         "all_finite": jnp.all(jnp.isfinite(logits) | ~valid)}
  if groups is None:
    out["gauc"] = jnp.array(jnp.nan, _accumulator_dtype())
    out["num_gauc_groups"] = jnp.zeros((), jnp.int32)
    return out
  groups = _check_groups(groups, logits.shape)
  values, rows, qualifies = _grouped_auc(logits, labels > 0.5, valid, groups)
  weights = jnp.where(qualifies, rows, 0).astype(values.dtype)
  total = jnp.sum(weights)
  out["gauc"] = jnp.where(total > 0,
                          jnp.sum(weights * jnp.where(qualifies, values, 0.0))
                          / jnp.maximum(total, 1), jnp.nan)
  out["num_gauc_groups"] = jnp.sum(qualifies.astype(jnp.int32))
  return out


def _np_grouped_auc(scores, positive, groups=None):
  """float64 numpy twin of :func:`_grouped_auc` over already-valid rows.

  ``groups=None`` means one group; a plain argsort is then ~3x faster than
  the lexicographic sort.
  """
  n = scores.shape[0]
  if groups is None:
    groups = np.zeros(n, np.int64)
    order = np.argsort(scores, kind="stable")
  else:
    order = np.lexsort((scores, groups))
  s, g, pos = scores[order], groups[order], positive[order]
  neg = ~pos
  new_group = np.ones(n, bool)
  new_group[1:] = g[1:] != g[:-1]
  new_block = new_group.copy()
  new_block[1:] |= s[1:] != s[:-1]
  group_id = np.cumsum(new_group) - 1
  block_id = np.cumsum(new_block) - 1
  neg_before = np.cumsum(neg) - neg
  block_first = np.flatnonzero(new_block)
  group_first = np.flatnonzero(new_group)
  below = neg_before[block_first][block_id] - neg_before[group_first][group_id]
  neg_tied = np.bincount(block_id, weights=neg)[block_id]
  wins = np.where(pos, below + 0.5 * neg_tied, 0.0)
  num_groups = len(group_first)
  positives = np.bincount(group_id, weights=pos, minlength=num_groups)
  negatives = np.bincount(group_id, weights=neg, minlength=num_groups)
  numer = np.bincount(group_id, weights=wins, minlength=num_groups)
  qualifies = (positives > 0) & (negatives > 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    aucs = numer / (positives * negatives)
  return aucs, positives + negatives, qualifies


def ctr_metrics(logits, labels, groups=None, *, where=None,
                num_bins: int = 15) -> Dict[str, float]:
  """Eager float64 LogLoss, AUC, GAUC and ECE for large evaluation sets.

  Validates its concrete inputs (equal lengths, finite logits, binary labels)
  and computes every metric with numpy from two sorts, so half a million rows
  take well under a second and nothing is compiled. Definitions match
  :func:`logloss`, :func:`auc`, :func:`gauc` and
  :func:`expected_calibration_error` (on ``sigmoid(logits)``).

  Args:
    logits: ``[n]`` logits.
    labels: ``[n]`` labels in {0, 1}.
    groups: optional ``[n]`` integer group ids (users) for GAUC.
    where: optional ``[n]`` bool mask.
    num_bins: ECE bins.

  Returns:
    dict with ``logloss``, ``auc``, ``gauc`` (NaN without ``groups`` or when
    no group qualifies), ``ece``, ``num_rows`` and ``num_gauc_groups``.

  >>> out = ctr_metrics([0., 2., -1., 1.], [0, 1, 0, 1], groups=[1, 1, 2, 2])
  >>> print(out["auc"], out["gauc"], out["num_gauc_groups"])
  1.0 1.0 2
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 1:
    raise ValueError(f"logits must be one-dimensional, got {logits.shape}")
  if labels.shape != logits.shape:
    raise ValueError(f"labels must have the same shape as logits "
                     f"{logits.shape}, got {labels.shape}")
  valid = np.ones(logits.shape, bool) if where is None else np.asarray(where,
                                                                       bool)
  if valid.shape != logits.shape:
    raise ValueError(f"where must have the same shape as logits "
                     f"{logits.shape}, got {valid.shape}")
  if groups is not None:
    groups = np.asarray(groups)
    if groups.shape != logits.shape:
      raise ValueError(f"groups must have the same shape as logits "
                       f"{logits.shape}, got {groups.shape}")
    if not np.issubdtype(groups.dtype, np.integer):
      raise TypeError(f"groups must hold integers, got dtype {groups.dtype}")
    groups = groups[valid]
  logits, labels = logits[valid], labels[valid].astype(np.float64)
  if not np.all(np.isfinite(logits)):
    raise ValueError("logits must be finite")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("labels must be 0 or 1")
  n = logits.shape[0]
  positive = labels == 1
  result = {"num_rows": n, "num_gauc_groups": 0, "gauc": float("nan")}
  if n == 0:
    result.update(logloss=float("nan"), auc=float("nan"), ece=float("nan"))
    return result
  result["logloss"] = float(np.mean(np.logaddexp(0.0, logits)
                                    - labels * logits))
  aucs, _, qualifies = _np_grouped_auc(logits, positive)
  result["auc"] = float(aucs[0]) if qualifies[0] else float("nan")
  if groups is not None:
    aucs, rows, qualifies = _np_grouped_auc(logits, positive, groups)
    if qualifies.any():
      result["gauc"] = float(np.sum(rows[qualifies] * aucs[qualifies])
                             / np.sum(rows[qualifies]))
    result["num_gauc_groups"] = int(qualifies.sum())
  probs = 1.0 / (1.0 + np.exp(-logits))
  bins = np.searchsorted(np.linspace(0.0, 1.0, num_bins + 1)[1:-1], probs)
  gaps = np.bincount(bins, weights=probs - labels, minlength=num_bins)
  result["ece"] = float(np.sum(np.abs(gaps)) / n)
  return result
