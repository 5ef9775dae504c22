"""The category-constraint step rule shared by every list decoder.

A list is built one position at a time under per-category minimum and maximum
counts and a maximum run of one category. :class:`CategoryState` records what a
partial list has used, :func:`category_state` starts it, :func:`allowed_picks`
masks the candidates the next position may take so that some completion of the
list still meets every constraint, and :func:`advance` appends a pick. The
greedy and exact rerankers (:mod:`hgrank_jax.rerank.constrained`) and the
decoders of the reranker networks (:mod:`hgrank_jax.models.rerankers`) share
them, which is why they live here, below both.

Completability is decided exactly in O(C^2) per step: once the counts of the
remaining items per category are fixed, they can be laid out with runs of at
most m iff each category's count fits between the others'
(``x_c <= m (r - x_c + 1)``, tightened by the run the list already ends with);
counts within ``[lo_c, hi_c]`` summing to the r free slots exist iff
``lo <= hi`` and ``sum lo <= r <= sum hi``.

>>> import jax.numpy as jnp
>>> state = category_state(jnp.array([True, True, True]), jnp.array([0, 0, 1]), 2)
>>> allowed_picks(state, jnp.array([0, 0, 1]), 0, 2, jnp.array([0, 1]), jnp.array([2, 2]),
...               max_run=2).tolist()
[True, True, True]
>>> state = advance(state, jnp.array(0), jnp.array(True), jnp.array([0, 0, 1]))
>>> allowed_picks(state, jnp.array([0, 0, 1]), 1, 2, jnp.array([0, 1]), jnp.array([2, 2]),
...               max_run=2).tolist()
[False, False, True]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hgrank_jax.ops.list_batch import vmap_lists


def completable_categories(counts, available, last_category, run_length, free_slots, lo_bound, hi_bound,
                 max_run):
  """Whether a partial list can be completed, for every hypothetical next pick.

  Args:
    counts, available: int ``[C]`` picked so far / valid and unpicked, per category.
    last_category, run_length: int scalars: the run the list currently ends with.
    free_slots: int scalar, slots left after the next pick.
    lo_bound, hi_bound: int ``[C]`` min and max counts.
    max_run: int scalar m.

  Returns:
    bool ``[C]``: entry c is True iff picking one more item of category c
    keeps the list completable.
  """
  num_categories = counts.shape[0]
  eye = jnp.eye(num_categories, dtype=jnp.int32)
  new_counts = counts[None, :] + eye                      # [pick c, category c']
  new_available = available[None, :] - eye
  picked = jnp.arange(num_categories)
  new_run = jnp.where(picked == last_category, run_length + 1, 1)
  # Largest count of c' that fits into free_slots with runs of at most m, the
  # list ending with a run of new_run items of the picked category.
  run_cap_other = (max_run * (free_slots + 1)) // (max_run + 1)
  run_cap_same = (max_run * free_slots + max_run - new_run) // (max_run + 1)
  run_cap = jnp.where(eye.astype(bool), run_cap_same[:, None], run_cap_other)
  lo = jnp.maximum(lo_bound[None, :] - new_counts, 0)
  hi = jnp.minimum(jnp.minimum(new_available, hi_bound[None, :] - new_counts), run_cap)
  return ((new_run <= max_run) & (new_available.diagonal() >= 0)
          & jnp.all(lo <= hi, axis=-1)
          & (lo.sum(-1) <= free_slots) & (hi.sum(-1) >= free_slots))


class CategoryState(NamedTuple):
  """What the constraint masks need to know about a partial list.

  Leading axes ``[...]`` are the lists (any batch shape).

  Attributes:
    available: bool ``[..., n]`` valid candidates not yet picked.
    counts: int32 ``[..., C]`` picks so far per category.
    last_category: int32 ``[...]`` category of the last pick, -1 before any.
    run_length: int32 ``[...]`` length of the run the list ends with.
    remaining: int32 ``[..., C]`` available candidates per category.
  """
  available: jax.Array
  counts: jax.Array
  last_category: jax.Array
  run_length: jax.Array
  remaining: jax.Array


def category_state(where, categories, num_categories):
  """The empty-list :class:`CategoryState`.

  Args:
    where: bool ``[..., n]`` valid candidates.
    categories: int ``[..., n]`` in ``[0, C)``.
    num_categories: static int C.
  """
  where = jnp.asarray(where, bool)
  batch = where.shape[:-1]
  one_hot = jax.nn.one_hot(jnp.asarray(categories, jnp.int32), num_categories, dtype=jnp.int32)
  remaining = jnp.sum(one_hot * where[..., None], axis=-2)
  return CategoryState(where, jnp.zeros(batch + (num_categories,), jnp.int32),
                       jnp.full(batch, -1, jnp.int32), jnp.zeros(batch, jnp.int32), remaining)


def _allowed_one(state, categories, step, target_length, lo_bound, hi_bound, max_run):
  num_categories = lo_bound.shape[-1]
  ok_category = completable_categories(state.counts, state.remaining, state.last_category,
                             state.run_length, target_length - step - 1, lo_bound, hi_bound,
                             max_run)
  # Without a completable pick, fall back to one that only breaks no cap or run.
  run_after = jnp.where(jnp.arange(num_categories) == state.last_category,
                        state.run_length + 1, 1)
  ok_local = (state.counts < hi_bound) & (run_after <= max_run)
  completable = state.available & ok_category[categories]
  allowed = jnp.where(jnp.any(completable), completable,
                      state.available & ok_local[categories])
  return allowed & (step < target_length)


def allowed_picks(state, categories, step, target_length, lo_bound, hi_bound, *, max_run):
  """Which candidates position ``step`` may take so the list stays completable.

  The rule :func:`constrained` follows, for any decoder that builds a list one
  position at a time (Seq2Slate's greedy, beam and sampled decoding use it):
  a candidate is allowed iff picking it leaves some completion of the list to
  ``target_length`` items within the min/max counts and the run length. When
  no pick keeps the list completable (infeasible constraints) the picks that
  break no cap or run are allowed instead, so a best-effort list still fills.

  Args:
    state: :class:`CategoryState` with leading axes ``[...]``.
    categories: int ``[..., n]``.
    step: int scalar, the position being filled (0-based).
    target_length: int ``[...]``, the list length to reach, ``min(k, valid)``.
    lo_bound, hi_bound: int ``[..., C]`` min and max counts.
    max_run: int scalar, longest run of one category.

  Returns:
    bool ``[..., n]``; all False once ``step >= target_length`` or nothing
    is left.
  """
  categories = jnp.asarray(categories, jnp.int32)
  batch = categories.shape[:-1]
  target_length = jnp.broadcast_to(jnp.asarray(target_length, jnp.int32), batch)
  lo_bound = jnp.broadcast_to(jnp.asarray(lo_bound, jnp.int32), batch + state.counts.shape[-1:])
  hi_bound = jnp.broadcast_to(jnp.asarray(hi_bound, jnp.int32), batch + state.counts.shape[-1:])

  def one(available, counts, last, run, remaining, cat, target, lo, hi):
    return _allowed_one(CategoryState(available, counts, last, run, remaining), cat, step,
                        target, lo, hi, max_run)

  return vmap_lists(one, batch, *state, categories, target_length, lo_bound, hi_bound)


def advance(state, pick, take, categories):
  """:class:`CategoryState` after appending ``pick [...]`` where ``take [...]``."""
  pick = jnp.asarray(pick, jnp.int32)
  safe = jnp.maximum(pick, 0)
  category = jnp.take_along_axis(categories, safe[..., None], -1)[..., 0]
  num_categories = state.counts.shape[-1]
  added = jax.nn.one_hot(category, num_categories, dtype=jnp.int32) * take[..., None]
  counts = state.counts + added
  run = jnp.where(take, jnp.where(category == state.last_category, state.run_length + 1, 1),
                  state.run_length)
  last = jnp.where(take, category, state.last_category)
  chosen = jax.nn.one_hot(safe, categories.shape[-1], dtype=bool) & take[..., None]
  return CategoryState(state.available & ~chosen, counts, last.astype(jnp.int32),
                       run.astype(jnp.int32), state.remaining - added)
