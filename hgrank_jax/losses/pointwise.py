"""Pointwise calibration loss: binary cross-entropy on logits (paper Eq. 1).

This is the calibration objective every Table 1 row starts from, and the term
the paper's model applies to both the primary and the quantized logit.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from hgrank_jax.losses import _common

Array = jax.Array


@jax.jit
def logloss(
    logits: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    segments: Optional[Array] = None,
) -> Array:
  r"""Mean sigmoid cross-entropy (binary log loss) from logits.

  Definition (Eq. 1 with :math:`\hat y = \sigma(s)`):

  .. math::
      \ell(s, y) = \frac{1}{N} \sum_i \big[\log(1 + e^{s_i}) - y_i s_i\big]
                 = -\frac{1}{N} \sum_i \big[y_i \log\sigma(s_i)
                   + (1 - y_i) \log(1 - \sigma(s_i))\big]

  over the :math:`N` valid rows. The softplus form is exact and stable for any
  logit. A fully masked input gives 0.

  Args:
    logits: ``[..., n]`` float logits :math:`s`.
    labels: ``[..., n]`` labels in ``[0, 1]`` (binary or soft).
    where: optional ``[..., n]`` bool mask of valid rows.
    segments: accepted for the common loss signature; a pointwise loss does not
      depend on grouping, so it is ignored.

  Returns:
    Scalar mean loss, in the dtype of ``logits``.

  >>> import jax.numpy as jnp
  >>> print(round(float(logloss(jnp.array([0., 2.]), jnp.array([1., 0.]))), 4))
  1.41
  """
  del segments  # Pointwise: grouping does not change the loss.
  logits, labels, valid, _ = _common.prepare(logits, labels, where, None)
  per_row = jax.nn.softplus(logits) - labels * logits
  total = jnp.sum(jnp.where(valid, per_row, 0.0))
  count = jnp.sum(valid)
  return total / jnp.maximum(count, 1).astype(total.dtype)
