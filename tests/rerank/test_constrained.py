"""Constrained greedy and exact MILP reranking against brute-force enumeration."""

import itertools

import jax
import numpy as np
import pytest

from hgrank_jax import rerank
from tests.rerank.reference import satisfies_constraints


def _completable(prefix, categories, valid, target, lo, hi, max_run):
  """Brute force: does some ordering of free items extend ``prefix`` to a feasible list?"""
  free = [i for i in range(len(categories)) if valid[i] and i not in prefix]
  for rest in itertools.permutations(free, target - len(prefix)):
    if satisfies_constraints(categories[list(prefix) + list(rest)], lo, hi, max_run):
      return True
  return False


def _reference_greedy(scores, categories, valid, k, lo, hi, max_run):
  """Highest score first among picks that keep the list completable (brute force)."""
  target = min(k, int(valid.sum()))
  prefix = []
  for _ in range(target):
    for i in np.argsort(-scores):
      if valid[i] and i not in prefix and _completable(prefix + [i], categories, valid, target,
                                                       lo, hi, max_run):
        prefix.append(int(i))
        break
  return prefix + [-1] * (k - len(prefix))


def _instance(rng, n=7, num_categories=3):
  scores = rng.normal(size=n)
  categories = rng.integers(0, num_categories, size=n)
  valid = rng.uniform(size=n) < 0.9
  lo = rng.integers(0, 2, size=num_categories)
  hi = rng.integers(1, 4, size=num_categories)
  return scores, categories, valid, lo, np.maximum(lo, hi), int(rng.integers(1, 3))


def test_greedy_equals_brute_force_lookahead_greedy():
  rng = np.random.default_rng(0)
  checked = 0
  while checked < 40:
    scores, categories, valid, lo, hi, max_run = _instance(rng)
    target = min(4, int(valid.sum()))
    if not _completable([], categories, valid, target, lo, hi, max_run):
      continue
    got = rerank.constrained(scores, categories, 4, min_count=lo, max_count=hi, max_run=max_run,
                             where=valid)
    expected = _reference_greedy(scores, categories, valid, 4, lo, hi, max_run)
    np.testing.assert_array_equal(np.asarray(got.indices), expected)
    assert bool(got.feasible)
    checked += 1


def test_greedy_feasible_on_thousands_of_random_instances():
  # Feasibility by brute force over all category sequences of length k.
  rng = np.random.default_rng(1)
  lists, n, k, num_categories = 3000, 10, 5, 3
  scores = rng.normal(size=(lists, n)).astype(np.float32)
  categories = rng.choice(num_categories, size=(lists, n), p=[0.6, 0.3, 0.1])
  lo = rng.integers(0, 3, size=(lists, num_categories))
  hi = np.maximum(lo, rng.integers(1, 5, size=(lists, num_categories)))
  max_run = 2
  sequences = np.array(list(itertools.product(range(num_categories), repeat=k)))
  seq_counts = np.stack([(sequences == c).sum(1) for c in range(num_categories)], 1)
  seq_ok_runs = np.array([satisfies_constraints(s, np.zeros(num_categories), np.full(num_categories, k),
                                     max_run) for s in sequences])
  available = np.stack([(categories == c).sum(1) for c in range(num_categories)], 1)
  fits = ((seq_counts[None] <= available[:, None]) & (seq_counts[None] >= lo[:, None])
          & (seq_counts[None] <= hi[:, None])).all(-1) & seq_ok_runs[None]
  feasible = fits.any(1)
  assert 0.2 < feasible.mean() < 0.95  # both kinds of instance are exercised

  result = jax.jit(lambda s, c, l, h: rerank.constrained(
      s, c, k, min_count=l, max_count=h, max_run=max_run, num_categories=num_categories))(
          scores, categories, lo, hi)
  indices, flags = np.asarray(result.indices), np.asarray(result.feasible)
  np.testing.assert_array_equal(flags, feasible)
  for b in np.nonzero(feasible)[0]:
    assert (indices[b] >= 0).all() and len(set(indices[b])) == k
    assert satisfies_constraints(categories[b, indices[b]], lo[b], hi[b], max_run), b


def _brute_force_optimum(scores, categories, valid, k, lo, hi, max_run):
  items = [i for i in range(len(scores)) if valid[i]]
  target = min(k, len(items))
  best = -np.inf
  for perm in itertools.permutations(items, target):
    if satisfies_constraints(categories[list(perm)], lo, hi, max_run):
      best = max(best, rerank.list_objective(scores, np.array(list(perm) + [-1] * (k - target))))
  return best


def test_exact_equals_brute_force_and_bounds_the_greedy():
  rng = np.random.default_rng(2)
  checked = 0
  while checked < 15:
    scores, categories, valid, lo, hi, max_run = _instance(rng, n=6)
    optimum = _brute_force_optimum(scores, categories, valid, 3, lo, hi, max_run)
    if not np.isfinite(optimum):
      continue
    kwargs = dict(min_count=lo, max_count=hi, max_run=max_run, where=valid)
    solved = rerank.exact(scores, categories, 3, **kwargs)
    assert bool(solved.feasible)
    chosen = np.asarray(solved.indices)
    assert satisfies_constraints(categories[chosen[chosen >= 0]], lo, hi, max_run)
    np.testing.assert_allclose(rerank.list_objective(scores, chosen), optimum, rtol=1e-9)
    greedy = rerank.constrained(scores, categories, 3, **kwargs)
    assert rerank.list_objective(scores, np.asarray(greedy.indices)) <= optimum + 1e-6
    checked += 1


def test_unconstrained_is_the_score_order():
  scores = np.random.default_rng(3).normal(size=(4, 9))
  categories = np.zeros((4, 9), int)
  got = rerank.constrained(scores, categories, 4)
  np.testing.assert_array_equal(np.asarray(got.indices), np.argsort(-scores, 1)[:, :4])
  np.testing.assert_array_equal(rerank.exact(scores, categories, 4).indices,
                                np.argsort(-scores, 1)[:, :4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_count=[3, 0]), "category 0 needs at least 3 items but only 2"),
    (dict(min_count=[2, 2]), "minimum counts sum to 4 but the list has only 3 slots"),
    (dict(max_count=[1, 1]), "caps allow only 2 of the 3 slots"),
])
def test_infeasible_constraints_raise_eagerly(kwargs, message):
  scores = np.arange(5.0)
  categories = np.array([0, 0, 1, 1, 1])
  for fn in (rerank.constrained, rerank.exact):
    with pytest.raises(ValueError, match=message):
      fn(scores, categories, 3, **kwargs)
    relaxed = fn(scores, categories, 3, best_effort=True, **kwargs)
    assert not bool(relaxed.feasible)


def test_jit_reports_infeasibility_and_empty_lists():
  scores = np.arange(10.0).reshape(2, 5)
  categories = np.array([[0, 0, 1, 1, 1]] * 2)
  where = np.array([[True] * 5, [False] * 5])
  result = jax.jit(lambda s: rerank.constrained(s, categories, 3, min_count=np.array([3, 0]),
                                                num_categories=2, where=where))(scores)
  assert not bool(result.feasible[0])
  np.testing.assert_array_equal(np.asarray(result.indices[1]), -1)
  assert not bool(result.feasible[1])  # the empty list misses the minimum too
  unconstrained = rerank.constrained(scores, categories, 3, num_categories=2, where=where)
  np.testing.assert_array_equal(np.asarray(unconstrained.indices[1]), -1)
  np.testing.assert_array_equal(np.asarray(unconstrained.feasible), [True, True])
