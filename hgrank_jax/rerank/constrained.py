"""Category-constrained reranking: a feasible greedy and an exact MILP.

The problem: from the valid candidates of a list choose an ordered final list
of ``K = min(k, number of valid candidates)`` items maximising the
position-weighted relevance ``sum_p r_{o_p} / log2(2 + p)`` subject to, for
every category c, ``min_count_c <= count_c <= max_count_c`` in the list and no
more than ``max_run`` consecutive items of one category.

:func:`constrained` is a greedy: position t takes the highest-scoring
candidate whose pick leaves the rest of the list completable. Completability
is decided exactly and in O(C^2) per step: once the counts of the remaining
items per category are fixed, they can be laid out with runs of at most m iff
each category's count fits between the others' (``x_c <= m (r - x_c + 1)``,
tightened by the length of the run the list already ends with), which is an
upper bound per category; counts within per-category bounds ``[lo_c, hi_c]``
and summing to the r free slots exist iff ``lo <= hi`` and
``sum lo <= r <= sum hi``. :func:`exact` solves the same problem to
optimality with scipy's MILP solver (HiGHS) over item-by-position assignment
variables; it measures the greedy's gap.

The step rule (:func:`~hgrank_jax.ops.category_constraints.category_state`,
:func:`~hgrank_jax.ops.category_constraints.allowed_picks`,
:func:`~hgrank_jax.ops.category_constraints.advance`) lives in :mod:`hgrank_jax.ops`,
below this module and the reranker networks whose decoders share it.

Infeasible constraints (minimums that need more slots or candidates than there
are, caps that leave fewer than K slots) raise a ValueError naming the first
offending list and category when the inputs are concrete, unless
``best_effort=True``; under jit, where values cannot raise, the returned
``feasible`` flag reports them and the greedy fills the list best effort
(respecting caps and runs, which can leave slots at ``-1``).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse

from hgrank_jax.ops.category_constraints import (CategoryState, advance, allowed_picks,
                                                 category_state)
from hgrank_jax.ops.list_batch import CHUNK_SIZE, valid_mask, vmap_lists
from hgrank_jax.rerank.diversity import finite_floor


class ConstrainedLists(NamedTuple):
  """Final lists and whether each satisfies every constraint.

  Attributes:
    indices: int32 ``[..., k]`` candidate indices, ``-1`` for unfilled slots.
    feasible: bool ``[...]``: the list fills ``min(k, valid)`` slots and meets
      every count and run constraint.
  """
  indices: jax.Array
  feasible: jax.Array


def _bounds(min_count, max_count, batch, num_categories, k):
  lo = jnp.zeros((), jnp.int32) if min_count is None else jnp.asarray(min_count, jnp.int32)
  hi = jnp.full((), k, jnp.int32) if max_count is None else jnp.asarray(max_count, jnp.int32)
  shape = tuple(batch) + (num_categories,)
  return jnp.broadcast_to(lo, shape), jnp.broadcast_to(hi, shape)


def _infer_num_categories(categories, min_count, max_count, num_categories):
  if num_categories is not None:
    return int(num_categories)
  for bound in (min_count, max_count):
    if bound is not None and np.ndim(bound) >= 1:
      return int(np.shape(bound)[-1])
  if isinstance(categories, jax.core.Tracer):
    raise ValueError("pass num_categories (or per-category bounds) under jit")
  return int(np.max(np.asarray(categories), initial=-1)) + 1


def _greedy_one(scores, categories, valid, lo_bound, hi_bound, *, k, max_run):
  num_categories = lo_bound.shape[0]
  target_length = jnp.minimum(k, valid.sum())

  def step(state, t):
    allowed = allowed_picks(state, categories, t, target_length, lo_bound, hi_bound,
                            max_run=max_run)
    pick = jnp.argmax(jnp.where(allowed, finite_floor(scores), -jnp.inf))
    take = jnp.any(allowed)
    state = advance(state, pick, take, categories)
    return state, jnp.where(take, pick, -1)

  state, picks = jax.lax.scan(step, category_state(valid, categories, num_categories),
                              jnp.arange(k))
  counts = state.counts
  feasible = ((picks >= 0).sum() == target_length) & jnp.all(counts >= lo_bound) & jnp.all(
      counts <= hi_bound) & (_longest_run(picks, categories) <= max_run)
  return picks.astype(jnp.int32), feasible


def _longest_run(picks, categories):
  category = jnp.where(picks >= 0, categories[jnp.maximum(picks, 0)], -1)

  def step(run, pair):
    previous, current = pair
    run = jnp.where((current >= 0) & (current == previous), run + 1, 1)
    return run, run

  _, runs = jax.lax.scan(step, jnp.array(1), (category[:-1], category[1:]))
  return jnp.max(jnp.concatenate([jnp.ones((1,), runs.dtype), runs]))


@functools.partial(jax.jit, static_argnames=("k", "num_categories", "max_run"))
def _constrained_jit(scores, categories, valid, lo, hi, *, k, num_categories, max_run):
  batch = scores.shape[:-1]
  one = functools.partial(_greedy_one, k=k, max_run=max_run)
  return vmap_lists(one, batch, scores, categories, valid, lo, hi, chunk_size=CHUNK_SIZE)


def infeasibility_reasons(categories, k, *, min_count=None, max_count=None, max_run=None,
                          num_categories=None, where=None):
  """Eager check of the constraints; one message per infeasible list.

  Checks what makes an instance infeasible whatever the scores: a minimum above
  the candidates of a category, minimums summing over the K slots, caps (also
  the ones a max run implies) leaving fewer than K slots.

  Returns:
    list of ``(flat list index, message)``, empty when every list is feasible.
  """
  categories = np.asarray(categories)
  batch, n = categories.shape[:-1], categories.shape[-1]
  num_categories = _infer_num_categories(categories, min_count, max_count, num_categories)
  shape = tuple(batch) + (num_categories,)
  lo = np.broadcast_to(np.asarray(0 if min_count is None else min_count, np.int64), shape)
  hi = np.broadcast_to(np.asarray(k if max_count is None else max_count, np.int64), shape)
  valid = np.ones(categories.shape, bool) if where is None else np.broadcast_to(where, categories.shape)
  flat_cat = categories.reshape(-1, n)
  flat_valid = valid.reshape(-1, n)
  lo, hi = lo.reshape(-1, num_categories), hi.reshape(-1, num_categories)
  reasons = []
  for row in range(flat_cat.shape[0]):
    target = min(k, int(flat_valid[row].sum()))
    available = np.bincount(flat_cat[row][flat_valid[row]], minlength=num_categories)
    cap = np.minimum(available, hi[row])
    if max_run is not None:
      cap = np.minimum(cap, (max_run * (target + 1)) // (max_run + 1))
    short = np.nonzero(lo[row] > available)[0]
    if short.size:
      c = int(short[0])
      reasons.append((row, f"category {c} needs at least {lo[row, c]} items but only "
                           f"{available[c]} valid candidates have it (short by "
                           f"{lo[row, c] - available[c]})"))
    elif lo[row].sum() > target:
      reasons.append((row, f"minimum counts sum to {lo[row].sum()} but the list has only "
                           f"{target} slots (short by {lo[row].sum() - target})"))
    elif cap.sum() < target:
      reasons.append((row, f"caps allow only {cap.sum()} of the {target} slots "
                           f"(short by {target - cap.sum()})"))
  return reasons


def constrained(scores, categories, k, *, min_count=None, max_count=None, max_run=None,
                num_categories=None, where=None, best_effort=False):
  """Greedy reranking under per-category count and run-length constraints.

  Args:
    scores: float ``[..., n]``, higher first.
    categories: int ``[..., n]`` in ``[0, C)``.
    k: static int list length, ``1 <= k <= n``.
    min_count, max_count: optional int, scalar or ``[C]`` or ``[..., C]``.
    max_run: optional static int >= 1, longest run of one category.
    num_categories: static int C; inferred from the bounds' last axis or from
      concrete categories when omitted.
    where: optional bool ``[..., n]``.
    best_effort: with concrete inputs, skip the infeasibility error.

  Returns:
    :class:`ConstrainedLists` ``(indices int32 [..., k], feasible bool [...])``.

  Raises:
    ValueError: concrete inputs whose constraints cannot be met, unless
      ``best_effort``.
  """
  n = jnp.shape(scores)[-1]
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"k must be an int in [1, {n}], got {k!r}")
  if max_run is not None and (not isinstance(max_run, int) or max_run < 1):
    raise ValueError(f"max_run must be a positive int, got {max_run!r}")
  num_categories = _infer_num_categories(categories, min_count, max_count, num_categories)
  # Inside a trace (any argument a tracer) values cannot raise: the flag reports instead.
  concrete = not any(isinstance(x, jax.core.Tracer)
                     for x in (scores, categories, min_count, max_count, where))
  if concrete and not best_effort:
    reasons = infeasibility_reasons(categories, k, min_count=min_count, max_count=max_count,
                                    max_run=max_run, num_categories=num_categories, where=where)
    if reasons:
      row, message = reasons[0]
      raise ValueError(f"infeasible constraints in {len(reasons)} list(s); list {row}: {message}")
  scores = jnp.asarray(scores, jnp.float32)
  batch = scores.shape[:-1]
  lo, hi = _bounds(min_count, max_count, batch, num_categories, k)
  valid = valid_mask(where, scores.shape)
  return ConstrainedLists(*_constrained_jit(
      scores, jnp.asarray(categories, jnp.int32), valid, lo, hi, k=k,
      num_categories=num_categories, max_run=k if max_run is None else max_run))


def position_discount(k):
  """``1 / log2(2 + p)`` for positions p = 0..k-1 (float64 ``[k]``)."""
  return 1.0 / np.log2(2.0 + np.arange(k))


def list_objective(scores, indices):
  """Position-weighted relevance ``sum_p r_{o_p} / log2(2 + p)`` of lists (numpy).

  Args:
    scores: float ``[..., n]``; indices: int ``[..., k]`` with ``-1`` empty.

  Returns:
    float64 ``[...]``.
  """
  scores, indices = np.asarray(scores, np.float64), np.asarray(indices)
  value = np.take_along_axis(scores, np.maximum(indices, 0), axis=-1)
  return np.sum(np.where(indices >= 0, value * position_discount(indices.shape[-1]), 0.0), -1)


def _exact_one(scores, categories, valid, lo, hi, k, max_run, time_limit):
  items = np.nonzero(valid)[0]
  slots = min(k, items.size)
  if slots == 0:
    return np.full(k, -1, np.int32), True
  num_items = items.size
  # Variable (a, p) = item items[a] at position p, flattened a * slots + p.
  discount = position_discount(slots)
  cost = -(scores[items][:, None] * discount[None, :]).ravel()
  rows, lower, upper = [], [], []

  def add(mask, low, high):
    rows.append(mask.ravel().astype(np.float64))
    lower.append(low)
    upper.append(high)

  for p in range(slots):                       # every position holds one item
    mask = np.zeros((num_items, slots))
    mask[:, p] = 1
    add(mask, 1, 1)
  for a in range(num_items):                   # every item at most once
    mask = np.zeros((num_items, slots))
    mask[a, :] = 1
    add(mask, 0, 1)
  item_category = categories[items]
  for c in np.unique(np.concatenate([item_category, np.nonzero(lo > 0)[0]])):
    in_category = (item_category == c)[:, None].astype(np.float64)
    if lo[c] > 0 or hi[c] < slots:
      add(np.broadcast_to(in_category, (num_items, slots)), lo[c], hi[c])
    if max_run is not None and max_run < slots:
      for start in range(slots - max_run):     # windows of max_run + 1 positions
        window = np.zeros((1, slots))
        window[0, start:start + max_run + 1] = 1
        add(in_category * window, 0, max_run)
  constraints = scipy.optimize.LinearConstraint(
      scipy.sparse.csr_array(np.stack(rows)), np.array(lower, float), np.array(upper, float))
  result = scipy.optimize.milp(cost, constraints=constraints, integrality=np.ones_like(cost),
                               bounds=scipy.optimize.Bounds(0, 1),
                               options={"time_limit": time_limit})
  indices = np.full(k, -1, np.int32)
  if result.x is None:
    return indices, False
  assignment = np.round(result.x).reshape(num_items, slots)
  indices[:slots] = items[np.argmax(assignment, axis=0)]
  return indices, result.status == 0


def exact(scores, categories, k, *, min_count=None, max_count=None, max_run=None,
          num_categories=None, where=None, best_effort=False, time_limit=60.0):
  """Optimal constrained list by MILP (scipy/HiGHS); eager, numpy in and out.

  Maximises ``sum_p r_{o_p} / log2(2 + p)`` over item-by-position binary
  assignments subject to the constraints of :func:`constrained`.

  Args:
    scores, categories, k, min_count, max_count, max_run, num_categories,
      where, best_effort: as for :func:`constrained`.
    time_limit: seconds per list for the solver.

  Returns:
    :class:`ConstrainedLists` of numpy arrays; ``feasible`` is False where
    the solver proved infeasibility or stopped before optimality.
  """
  scores = np.asarray(scores, np.float64)
  categories = np.asarray(categories)
  batch, n = scores.shape[:-1], scores.shape[-1]
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"k must be an int in [1, {n}], got {k!r}")
  num_categories = _infer_num_categories(categories, min_count, max_count, num_categories)
  if not best_effort:
    reasons = infeasibility_reasons(categories, k, min_count=min_count, max_count=max_count,
                                    max_run=max_run, num_categories=num_categories, where=where)
    if reasons:
      row, message = reasons[0]
      raise ValueError(f"infeasible constraints in {len(reasons)} list(s); list {row}: {message}")
  lo, hi = (np.asarray(b) for b in _bounds(min_count, max_count, batch, num_categories, k))
  valid = np.asarray(valid_mask(where, scores.shape))
  flat = [x.reshape((-1,) + x.shape[len(batch):]) for x in (scores, categories, valid, lo, hi)]
  results = [_exact_one(*row, k, max_run, time_limit) for row in zip(*flat)]
  indices = np.stack([r[0] for r in results]).reshape(tuple(batch) + (k,))
  feasible = np.array([r[1] for r in results]).reshape(batch)
  return ConstrainedLists(indices, feasible)
