"""Pairwise logistic (RankNet) loss, the in-batch pairwise baseline of Table 1.

This delegates to ``rax.pairwise_logistic_loss``. Note its memory: every pair of
rows in a list is materialised, so a batch of ``n`` rows treated as one list
costs ``O(n**2)`` memory (a 4096-row batch: ~16.8M pairs, ~67 MB per float32
temporary). That is what the baseline is; the listwise and group-wise losses in
this package stay O(n).
"""

from typing import Optional

import jax
import rax

from hgrank_jax.losses import _common

Array = jax.Array


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
  ``segments`` is given). 0 when there is no such pair.

  Args:
    logits: ``[..., n]`` float logits.
    labels: ``[..., n]`` labels (any ordered relevance).
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids; only pairs within a segment count
      (built by Rax as an ``n x n`` mask).

  Returns:
    Scalar loss.

  >>> import jax.numpy as jnp
  >>> loss = pairwise_logistic(jnp.array([1., 0., 0.]), jnp.array([1., 0., 0.]))
  >>> print(round(float(loss), 4))  # log(1 + e^-1)
  0.3133
  """
  logits, labels, valid, segments = _common.prepare(logits, labels, where,
                                                    segments)
  return rax.pairwise_logistic_loss(logits, labels, where=valid,
                                    segments=segments)
