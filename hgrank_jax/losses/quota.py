"""Soft category quotas and a differentiable top-k NDCG, for training rerankers.

Category-level business priorities enter training as penalties on the soft
exposure from ``hgrank_jax.ops.soft_category_exposure`` (seeds 000/001):

* ``quota_penalty`` — squared hinge on the shortfall below ``min_count`` and
  the excess above ``max_count``, per category; a plain loss term.
* ``QuotaMultipliers``, ``init_quota_multipliers``, ``quota_lagrangian`` and
  ``dual_ascent_update`` — the Lagrangian alternative (seed 003): add
  ``quota_lagrangian`` to the loss, and after each step raise the multiplier of
  every violated bound by ``step_size`` times its mean violation (projected to
  stay non-negative), so persistent violations cost more and more.
* ``soft_ndcg_loss`` — negated NDCG@k computed on ``soft_rank``; the relevance
  term the quota terms trade against.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from hgrank_jax.ops import sorting


def quota_violations(exposure, *, min_count=None, max_count=None):
  """Per-category shortfall and excess ``([..., C], [..., C])``, both >= 0.

  Args:
    exposure: float ``[..., C]`` soft (or hard) count of each category.
    min_count: optional float, scalar or broadcastable to ``[..., C]``.
    max_count: optional float, scalar or broadcastable to ``[..., C]``.
  """
  exposure = jnp.asarray(exposure)
  zeros = jnp.zeros_like(exposure)
  shortfall = zeros if min_count is None else jax.nn.relu(min_count - exposure)
  excess = zeros if max_count is None else jax.nn.relu(exposure - max_count)
  return shortfall, excess


def _mean_over_lists(per_list):
  return jnp.mean(per_list) if per_list.ndim else per_list


def quota_penalty(exposure, *, min_count=None, max_count=None):
  """Squared-hinge quota penalty, summed over categories, averaged over lists.

  ``sum_c relu(min_c - e_c)^2 + relu(e_c - max_c)^2`` for each list, then the
  mean over the leading axes. Zero when every quota holds.

  Args:
    exposure: float ``[..., C]``.
    min_count, max_count: optional bounds broadcastable to ``[..., C]``.

  Returns:
    float scalar.

  >>> quota_penalty(jnp.array([0.5, 2.0]), min_count=1.0, max_count=1.5)
  Array(0.5, dtype=float32)
  """
  shortfall, excess = quota_violations(
      exposure, min_count=min_count, max_count=max_count)
  return _mean_over_lists((shortfall ** 2 + excess ** 2).sum(-1))


class QuotaMultipliers(NamedTuple):
  """Non-negative Lagrange multipliers ``[C]`` for the lower and upper bounds."""
  lower: jax.Array
  upper: jax.Array


def init_quota_multipliers(num_categories, dtype=jnp.float32):
  """All-zero multipliers: no bound is priced until it is violated."""
  zeros = jnp.zeros((num_categories,), dtype)
  return QuotaMultipliers(lower=zeros, upper=zeros)


def _signed_violations(exposure, min_count, max_count):
  """Constraint values g <= 0 when satisfied: (min - e, e - max), per list."""
  exposure = jnp.asarray(exposure)
  lower = (jnp.zeros_like(exposure) if min_count is None
           else min_count - exposure)
  upper = (jnp.zeros_like(exposure) if max_count is None
           else exposure - max_count)
  return lower, upper


def quota_lagrangian(exposure, multipliers, *, min_count=None, max_count=None):
  """Lagrangian quota term ``sum_c l_c (min_c - e_c) + u_c (e_c - max_c)``.

  The multipliers are treated as constants (``stop_gradient``); they move only
  through ``dual_ascent_update``. Averaged over the leading axes.

  Args:
    exposure: float ``[..., C]``.
    multipliers: ``QuotaMultipliers`` with ``[C]`` arrays.
    min_count, max_count: optional bounds broadcastable to ``[..., C]``.

  Returns:
    float scalar.
  """
  lower, upper = _signed_violations(exposure, min_count, max_count)
  lower_price = jax.lax.stop_gradient(multipliers.lower)
  upper_price = jax.lax.stop_gradient(multipliers.upper)
  per_list = (lower_price * lower + upper_price * upper).sum(-1)
  return _mean_over_lists(per_list)


def dual_ascent_update(multipliers, exposure, *, min_count=None,
                       max_count=None, step_size=0.1):
  """One projected dual-ascent step on the quota multipliers.

  ``lambda <- max(0, lambda + step_size * mean_lists(g))`` with ``g = min - e``
  for lower bounds and ``e - max`` for upper bounds: a violated bound's price
  rises, a slack bound's price decays back towards zero.

  Args:
    multipliers: ``QuotaMultipliers`` ``[C]``.
    exposure: float ``[..., C]`` measured exposure (soft or hard); no gradient
      flows through it.
    min_count, max_count: optional bounds broadcastable to ``[..., C]``.
    step_size: positive float.

  Returns:
    New ``QuotaMultipliers``.

  >>> m = init_quota_multipliers(2)
  >>> dual_ascent_update(m, jnp.array([0.0, 3.0]), min_count=1.0).lower
  Array([0.1, 0. ], dtype=float32)
  """
  exposure = jax.lax.stop_gradient(jnp.asarray(exposure))
  lower, upper = _signed_violations(exposure, min_count, max_count)
  lead_axes = tuple(range(exposure.ndim - 1))
  mean_lower = jnp.mean(lower, axis=lead_axes) if lead_axes else lower
  mean_upper = jnp.mean(upper, axis=lead_axes) if lead_axes else upper
  return QuotaMultipliers(
      lower=jax.nn.relu(multipliers.lower + step_size * mean_lower),
      upper=jax.nn.relu(multipliers.upper + step_size * mean_upper))


def soft_ndcg_loss(scores, labels, *, where=None, topn: Optional[int] = None,
                   method="fast", temperature=1.0, **sort_kwargs):
  """Negated soft NDCG@topn built on ``soft_rank``; a differentiable loss.

  ``DCG = sum_i (2^y_i - 1) / log2(1 + r_i) * cut_i`` with ``r = soft_rank``
  and ``cut_i = clip(topn + 1 - r_i, 0, 1)``, which is exactly the indicator
  ``r_i <= topn`` at integer ranks and fades out linearly in between. Divided by the ideal DCG of the labels;
  lists with no positive label (ideal DCG 0) are left out of the mean, and
  the loss is 0 when no list qualifies (never NaN).

  Args:
    scores: float ``[..., n]``.
    labels: float ``[..., n]`` graded relevance (>= 0).
    where: optional bool ``[..., n]``.
    topn: optional static int cutoff; None uses the whole list.
    method, temperature, **sort_kwargs: passed to ``soft_rank``.

  Returns:
    float scalar in [-1, 0] up to the relaxation's slack.

  >>> soft_ndcg_loss(jnp.array([2.0, 1.0, 0.0]), jnp.array([1.0, 0.0, 0.0]),
  ...                temperature=1e-3)
  Array(-1., dtype=float32)
  """
  ranks = sorting.soft_rank(scores, method=method, temperature=temperature,
                            where=where, **sort_kwargs)
  labels = jnp.asarray(labels, ranks.dtype)
  valid = (jnp.ones(ranks.shape, bool) if where is None
           else jnp.broadcast_to(jnp.asarray(where, bool), ranks.shape))
  gains = jnp.where(valid, 2.0 ** labels - 1.0, 0.0)
  n = ranks.shape[-1]
  cutoff = n if topn is None else int(topn)
  if cutoff < 1:
    raise ValueError(f"topn must be a positive integer, got {topn!r}.")
  in_top = jnp.clip(cutoff + 1.0 - ranks, 0.0, 1.0)
  dcg = jnp.sum(jnp.where(valid, gains * in_top / jnp.log2(1.0 + ranks), 0.0), -1)
  ideal_gains = -jnp.sort(-gains, axis=-1)[..., :cutoff]
  ideal_discount = 1.0 / jnp.log2(2.0 + jnp.arange(ideal_gains.shape[-1]))
  ideal = jnp.sum(ideal_gains * ideal_discount, -1)
  has_positive = ideal > 0
  ndcg = jnp.where(has_positive, dcg / jnp.where(has_positive, ideal, 1.0), 0.0)
  count = jnp.sum(has_positive)
  return -jnp.sum(ndcg) / jnp.maximum(count, 1)
