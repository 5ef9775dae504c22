"""Training losses with Rax's signature ``fn(logits, labels, *, where, ...)``.

Pointwise :func:`logloss` (Eq. 1); listwise :func:`list_ce` (Eq. 8) and
:func:`softmax_ce`; pairwise :func:`pairwise_logistic`; the paper's hierarchical
group-wise :func:`group_ce` (Eq. 9); and JRC (:func:`jrc_loss`). Every loss
returns a scalar, is jit- and vmap-safe, and gives 0 on fully masked input.
Reranker training terms live in :mod:`hgrank_jax.losses.quota` (soft quota
penalty, its Lagrangian, soft NDCG) and are re-exported here.

:func:`get_loss` looks a loss up by name, including the Table 1 combinations
``"logloss+X"`` = logloss + w * X (w tuned on validation over
:data:`TABLE1_WEIGHT_GRID`, 1.0 by default).
"""

from typing import Callable, Optional

from hgrank_jax.losses.groupwise import group_ce
from hgrank_jax.losses.groupwise import negative_hardness_per_level
from hgrank_jax.losses.groupwise import per_level_list_ce
from hgrank_jax.losses.groupwise import uncertainty_weighted_sum
from hgrank_jax.losses.jrc import jrc_loss
from hgrank_jax.losses.jrc import jrc_probability
from hgrank_jax.losses.listwise import list_ce
from hgrank_jax.losses.listwise import segment_cross_entropy
from hgrank_jax.losses.listwise import softmax_ce
from hgrank_jax.losses.pairwise import pairwise_logistic
from hgrank_jax.losses.pointwise import logloss
from hgrank_jax.losses.quota import QuotaMultipliers
from hgrank_jax.losses.quota import dual_ascent_update
from hgrank_jax.losses.quota import init_quota_multipliers
from hgrank_jax.losses.quota import quota_lagrangian
from hgrank_jax.losses.quota import quota_penalty
from hgrank_jax.losses.quota import quota_violations
from hgrank_jax.losses.quota import soft_ndcg_loss

# Weights w of "logloss + w * X" searched on validation for Table 1.
TABLE1_WEIGHT_GRID = (0.1, 0.3, 1.0)



def soft_ndcg(logits, labels, *, where=None, segments=None, **kwargs):
  """:func:`soft_ndcg_loss` under the registry's common signature.

  ``segments`` is not supported (soft ranks are taken over whole lists);
  passing one raises ValueError. Other keywords (``topn``, ``method``,
  ``temperature``) go to :func:`soft_ndcg_loss`.
  """
  if segments is not None:
    raise ValueError("segments is not supported by soft_ndcg; give each list "
                     "its own leading index instead")
  return soft_ndcg_loss(logits, labels, where=where, **kwargs)


LOSSES = {
    "logloss": logloss,
    "list_ce": list_ce,
    "softmax_ce": softmax_ce,
    "pairwise_logistic": pairwise_logistic,
    "group_ce": group_ce,
    "jrc": jrc_loss,
    "soft_ndcg": soft_ndcg,
}


def with_logloss(ranking_loss: Callable, weight: float = 1.0) -> Callable:
  """Returns ``fn(logits, labels, **kw) = logloss + weight * ranking_loss``.

  ``where`` goes to both terms; ``segments`` and any other keyword (e.g.
  ``codes``, ``log_sigma``) go to the ranking loss only.

  >>> import jax.numpy as jnp
  >>> fn = with_logloss(list_ce, weight=0.3)
  >>> s, y = jnp.array([1., 0.]), jnp.array([1., 0.])
  >>> bool(jnp.isclose(fn(s, y), logloss(s, y) + 0.3 * list_ce(s, y)))
  True
  """
  weight = float(weight)

  def combined(logits, labels, *, where=None, segments=None, **kwargs):
    return (logloss(logits, labels, where=where)
            + weight * ranking_loss(logits, labels, where=where,
                                    segments=segments, **kwargs))

  inner_name = getattr(ranking_loss, "__name__", "loss")
  combined.__name__ = f"logloss_plus_{inner_name}"
  return combined


def get_loss(name: str, *, weight: Optional[float] = None) -> Callable:
  """Looks up a loss by name.

  Args:
    name: one of ``LOSSES`` (``"logloss"``, ``"list_ce"``, ``"softmax_ce"``,
      ``"pairwise_logistic"``, ``"group_ce"``, ``"jrc"``, ``"soft_ndcg"``), or
      ``"logloss+X"`` for the Table 1 combination with X one of those except
      logloss and jrc.
    weight: w for ``"logloss+X"`` (default 1.0); not allowed otherwise.

  Returns:
    The loss function.

  Raises:
    ValueError: for an unknown name, or a weight given without ``logloss+``.

  >>> get_loss("list_ce") is list_ce
  True
  """
  if not isinstance(name, str):
    raise ValueError(f"loss name must be a string, got {name!r}")
  key = name.strip().lower().replace(" ", "")
  # JRC carries its own calibration term and two logits per row, so it is not
  # combined with logloss.
  combinable = [n for n in sorted(LOSSES) if n not in ("logloss", "jrc")]
  known = sorted(LOSSES) + [f"logloss+{n}" for n in combinable]
  if key.startswith("logloss+"):
    inner = key[len("logloss+"):]
    if inner in combinable:
      return with_logloss(LOSSES[inner], 1.0 if weight is None else weight)
  elif key in LOSSES:
    if weight is not None:
      raise ValueError(
          f"weight applies to 'logloss+X' losses only, not to {name!r}")
    return LOSSES[key]
  raise ValueError(f"unknown loss name {name!r}; known losses: "
                   + ", ".join(known))


__all__ = [
    "LOSSES",
    "QuotaMultipliers",
    "TABLE1_WEIGHT_GRID",
    "dual_ascent_update",
    "get_loss",
    "group_ce",
    "init_quota_multipliers",
    "jrc_loss",
    "jrc_probability",
    "list_ce",
    "logloss",
    "pairwise_logistic",
    "negative_hardness_per_level",
    "per_level_list_ce",
    "quota_lagrangian",
    "quota_penalty",
    "quota_violations",
    "segment_cross_entropy",
    "soft_ndcg",
    "soft_ndcg_loss",
    "softmax_ce",
    "uncertainty_weighted_sum",
    "with_logloss",
]
