"""Ranking metrics at a cutoff (NDCG, MRR, recall), delegating to Rax.

Thin wrappers over ``rax.ndcg_metric``, ``rax.mrr_metric`` and
``rax.recall_metric`` that fix our argument names, check shapes at trace time
and document Rax's conventions: lists are the last axis, the result is the mean
over lists holding at least one valid item, and a list without any relevant
item scores 0 (as in scikit-learn's ``ndcg_score``). Tied scores are ordered by
position (Rax's ``utils.ranks`` is a stable sort), unlike scikit-learn's tie
averaging. Rax's ``segments=`` builds ``n x n`` masks, so for many small lists
prefer a ``[num_lists, list_size]`` layout with ``where`` over one long
segmented list.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import rax

Array = jax.Array


def _check(scores, labels, where, segments, topn):
  scores = jnp.asarray(scores)
  if scores.ndim < 1:
    raise ValueError(f"scores must have a list axis [..., n], got shape "
                     f"{scores.shape}")
  for name, value in (("labels", labels), ("where", where),
                      ("segments", segments)):
    if value is not None and jnp.shape(value) != scores.shape:
      raise ValueError(f"{name} must have the same shape as scores "
                       f"{scores.shape}, got {jnp.shape(value)}")
  if topn is not None and (isinstance(topn, bool) or not isinstance(topn, int)
                           or topn < 1):
    raise ValueError(f"topn must be None or a static int >= 1, got {topn!r}")
  return scores, jnp.asarray(labels).astype(scores.dtype)


@functools.partial(jax.jit, static_argnames=("topn",))
def ndcg(scores: Array, labels: Array, *, topn: Optional[int] = None,
         where: Optional[Array] = None,
         segments: Optional[Array] = None) -> Array:
  r"""NDCG@topn with gain :math:`2^y - 1` and discount :math:`1/\log_2(1+r)`.

  .. math::
      \mathrm{NDCG@k} = \frac{\sum_{i: r_i \le k} (2^{y_i} - 1) /
                        \log_2(1 + r_i)}{\text{same for the ideal order}}

  Args:
    scores: ``[..., n]`` scores; :math:`r_i` is the 1-based rank by score.
    labels: ``[..., n]`` graded relevance.
    topn: static cutoff :math:`k`; None ranks the whole list.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids of sub-lists (Rax, ``n x n``).

  Returns:
    Scalar mean over lists.

  >>> import jax.numpy as jnp
  >>> print(ndcg(jnp.array([2., 1., 3.]), jnp.array([2., 0., 1.])))
  0.79670763
  """
  scores, labels = _check(scores, labels, where, segments, topn)
  return rax.ndcg_metric(scores, labels, where=where, segments=segments,
                         topn=topn)


@functools.partial(jax.jit, static_argnames=("topn",))
def mrr(scores: Array, labels: Array, *, topn: Optional[int] = None,
        where: Optional[Array] = None,
        segments: Optional[Array] = None) -> Array:
  r"""Mean reciprocal rank of the first relevant item (label >= 1) within topn.

  .. math::
      \mathrm{MRR@k} = \max_{i: y_i \ge 1,\ r_i \le k} 1 / r_i
      \quad (0 \text{ if none})

  Args:
    scores: ``[..., n]`` scores.
    labels: ``[..., n]`` labels; items with label >= 1 are relevant.
    topn: static cutoff; None ranks the whole list.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids of sub-lists.

  Returns:
    Scalar mean over lists.

  >>> import jax.numpy as jnp
  >>> print(mrr(jnp.array([2., 1., 3.]), jnp.array([1., 0., 0.])))
  0.5
  """
  scores, labels = _check(scores, labels, where, segments, topn)
  return rax.mrr_metric(scores, labels, where=where, segments=segments,
                        topn=topn)


@functools.partial(jax.jit, static_argnames=("topn",))
def recall(scores: Array, labels: Array, *, topn: Optional[int] = None,
           where: Optional[Array] = None,
           segments: Optional[Array] = None) -> Array:
  r"""Share of relevant items (label >= 1) ranked within topn.

  .. math::
      \mathrm{Recall@k} = \frac{|\{i : y_i \ge 1,\ r_i \le k\}|}
                               {|\{i : y_i \ge 1\}|} \quad (0 \text{ if no
      relevant item})

  Args:
    scores: ``[..., n]`` scores.
    labels: ``[..., n]`` labels; items with label >= 1 are relevant.
    topn: static cutoff; None ranks the whole list.
    where: optional ``[..., n]`` bool mask.
    segments: optional ``[..., n]`` int ids of sub-lists.

  Returns:
    Scalar mean over lists.

  >>> import jax.numpy as jnp
  >>> print(recall(jnp.array([2., 1., 3.]), jnp.array([1., 1., 0.]), topn=2))
  0.5
  """
  scores, labels = _check(scores, labels, where, segments, topn)
  return rax.recall_metric(scores, labels, where=where, segments=segments,
                           topn=topn)
