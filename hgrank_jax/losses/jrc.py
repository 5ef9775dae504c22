"""JRC: joint ranking and calibration (Sheng et al., KDD 2023), as pinned here.

The model emits two logits per row, ``(f0, f1)``. The calibration term is the
two-class cross-entropy of ``softmax(f0, f1)`` against the label; the ranking
term treats ``f_y`` as a score over the rows of a context (default: the whole
batch; option: the rows of one user) and asks that row ``i`` win the softmax of
``f_{y_i}`` over its context. The served probability is ``softmax(f0, f1)[1]``.
Contexts are segments reduced in O(n) (:mod:`hgrank_jax.ops.segments`).
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from hgrank_jax.losses import _common
from hgrank_jax.ops import segments as seg

Array = jax.Array


def _check_two_logits(logits) -> Array:
  logits = jnp.asarray(logits)
  if logits.ndim < 2 or logits.shape[-1] != 2:
    raise ValueError(
        "logits must have shape [..., n, 2] (the two JRC logits f0, f1 per "
        f"row), got {logits.shape}")
  return logits


def jrc_probability(logits: Array) -> Array:
  r"""Served click probability :math:`\mathrm{softmax}(f_0, f_1)_1 =
  \sigma(f_1 - f_0)`.

  Args:
    logits: ``[..., 2]`` float logits.

  Returns:
    ``[...]`` probabilities.

  >>> import jax.numpy as jnp
  >>> print(jrc_probability(jnp.array([[0., 0.], [0., 100.]])))
  [0.5 1. ]
  """
  logits = jnp.asarray(logits)
  if logits.ndim < 1 or logits.shape[-1] != 2:
    raise ValueError(f"logits must have shape [..., 2], got {logits.shape}")
  return jax.nn.sigmoid(logits[..., 1] - logits[..., 0])


@functools.partial(jax.jit, static_argnames=("alpha",))
def jrc_loss(
    logits: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
    alpha: float = 0.5,
) -> Array:
  r"""Joint ranking and calibration loss.

  With :math:`p_i = \mathrm{softmax}(f_0(x_i), f_1(x_i))` and context
  :math:`C(i)` (the list of row :math:`i`, or its segment when ``segments`` is
  given),

  .. math::
      \ell_{cal} &= \frac{1}{N}\sum_i -\log p_{i, y_i} \\
      \ell_{rank} &= \frac{1}{N}\sum_i -\log
          \frac{e^{f_{y_i}(x_i)}}{\sum_{j \in C(i)} e^{f_{y_i}(x_j)}} \\
      \ell &= \alpha\,\ell_{cal} + (1 - \alpha)\,\ell_{rank}

  over the :math:`N` valid rows (soft labels mix the two classes linearly).
  0 for a fully masked input.

  Args:
    logits: ``[..., n, 2]`` float logits :math:`(f_0, f_1)` per row; each
      leading index is its own list.
    labels: ``[..., n]`` labels in ``[0, 1]``.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int context ids (e.g. user ids); default
      context is the whole list (the batch).
    alpha: weight of the calibration term (0.5 by default).

  Returns:
    Scalar loss.

  >>> import jax.numpy as jnp
  >>> logits = jnp.zeros((2, 2))
  >>> loss = jrc_loss(logits, jnp.array([1., 0.]))
  >>> print(round(float(loss), 4))  # both terms are log 2
  0.6931
  """
  logits = _check_two_logits(logits)
  list_shape = logits.shape[:-1]
  _, labels, valid, segments = _common.prepare(
      logits[..., 0], labels, where, segments)
  class_log_probs = jax.nn.log_softmax(logits, axis=-1)
  calibration = -(labels * class_log_probs[..., 1]
                  + (1.0 - labels) * class_log_probs[..., 0])

  ids, num_segments = _common.list_segment_ids(list_shape, valid, segments)
  flat_valid = valid.reshape(-1)
  flat = logits.reshape(-1, 2)
  # Log-normaliser of each class's logit over the context of every row.
  context_lse = []
  for column in (0, 1):
    per_context = seg.segment_logsumexp(flat[:, column], ids, num_segments,
                                        where=flat_valid)
    # Contexts without a valid row hold -inf; no valid row reads them, and a
    # finite stand-in keeps 0 * inf out of the masked rows.
    per_context = jnp.where(jnp.isfinite(per_context), per_context, 0.0)
    context_lse.append(seg.gather_segments(per_context, ids, 0.0))
  flat_labels = labels.reshape(-1)
  ranking = (flat_labels * (context_lse[1] - flat[:, 1])
             + (1.0 - flat_labels) * (context_lse[0] - flat[:, 0]))

  count = jnp.maximum(jnp.sum(flat_valid), 1).astype(logits.dtype)
  calibration = jnp.sum(jnp.where(valid, calibration, 0.0)) / count
  ranking = jnp.sum(jnp.where(flat_valid, ranking, 0.0)) / count
  return alpha * calibration + (1.0 - alpha) * ranking
