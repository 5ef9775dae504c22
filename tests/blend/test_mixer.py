"""Multipliers and the order-preserving merge against direct references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.blend import mixer


def _reference_merge(scores, lengths, k, monetized, max_monetized, no_adjacent):
  """Plain-Python merge: the highest allowed head wins each slot."""
  heads = [0] * len(lengths)
  out, used, prev = [], 0, False
  for _ in range(k):
    best, best_score = -1, -np.inf
    for b in range(len(lengths)):
      if heads[b] >= lengths[b]:
        continue
      if monetized[b] and (used >= max_monetized or (no_adjacent and prev)):
        continue
      if scores[b, heads[b]] > best_score:
        best, best_score = b, scores[b, heads[b]]
    if best < 0:
      out.append((-1, -1))
      prev = False
      continue
    out.append((best, heads[best]))
    heads[best] += 1
    used += monetized[best]
    prev = bool(monetized[best])
  return out


def test_merge_matches_reference_and_keeps_queue_order():
  rng = np.random.default_rng(0)
  num_requests, num_businesses, queue_length, k = 200, 4, 6, 8
  scores = rng.lognormal(size=(num_requests, num_businesses, queue_length)).astype(np.float32)
  lengths = rng.integers(0, queue_length + 1, size=(num_requests, num_businesses))
  where = np.arange(queue_length) < lengths[..., None]
  monetized = np.array([False, False, True, True])
  business, position, _ = jax.jit(
      lambda s, w: mixer.merge_queues(s, k, where=w, monetized=monetized, max_monetized=2,
                                      no_adjacent_monetized=True))(scores, where)
  business, position = np.asarray(business), np.asarray(position)
  for r in range(num_requests):
    expected = _reference_merge(scores[r], lengths[r], k, monetized, 2, True)
    assert list(zip(business[r], position[r])) == [tuple(map(int, e)) for e in expected]
    # Intra-queue order: each business's positions appear as 0, 1, 2, ... in slot order.
    for b in range(num_businesses):
      taken = position[r][business[r] == b]
      np.testing.assert_array_equal(taken, np.arange(len(taken)))
    # Page rules.
    is_money = np.where(business[r] >= 0, monetized[np.maximum(business[r], 0)], False)
    assert is_money.sum() <= 2
    assert not np.any(is_money[1:] & is_money[:-1])


def test_merge_never_reorders_even_with_unsorted_scores():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(50, 3, 5))  # deliberately not sorted within queues
  business, position, _ = mixer.merge_queues(scores, 10)
  for r in range(50):
    for b in range(3):
      taken = np.asarray(position[r])[np.asarray(business[r]) == b]
      np.testing.assert_array_equal(taken, np.arange(len(taken)))
  assert np.all(np.asarray(business) >= 0)  # 15 items fill 10 slots


def test_merge_empty_queues_leave_slots_empty():
  scores = np.zeros((2, 4))
  business, position, _ = mixer.merge_queues(scores, 3, where=np.zeros((2, 4), bool))
  np.testing.assert_array_equal(business, -1)
  np.testing.assert_array_equal(position, -1)
  scores = np.array([[1.0, 0.5], [0.7, 0.1]])
  business, _, _ = mixer.merge_queues(scores, 5, monetized=[False, True], max_monetized=1)
  np.testing.assert_array_equal(business, [0, 1, 0, -1, -1])


def test_merge_rejects_nan_and_holes_eagerly_and_stops_queue_under_jit():
  scores = np.array([[1.0, np.nan], [0.5, 0.4]])
  with pytest.raises(ValueError, match="NaN"):
    mixer.merge_queues(scores, 2)
  with pytest.raises(ValueError, match="gap"):
    mixer.merge_queues(np.ones((2, 3)), 2, where=np.array([[True, False, True]] * 2))
  business, position, _ = jax.jit(lambda s: mixer.merge_queues(s, 3))(scores)
  np.testing.assert_array_equal(business, [0, 1, 1])  # queue 0 ends at its NaN


def test_max_per_business():
  scores = np.array([[3.0, 2.9, 2.8], [1.0, 0.9, 0.8]])
  business, _, _ = mixer.merge_queues(scores, 4, max_per_business=[2, 3])
  np.testing.assert_array_equal(business, [0, 0, 1, 1])


def test_segment_multipliers_are_ratios_and_positive():
  rng = np.random.default_rng(2)
  n = 20_000
  segments, businesses = rng.integers(0, 3, n), rng.integers(0, 2, n)
  truth = np.array([[0.5, 1.0], [1.0, 2.0], [1.5, 0.8]])
  predicted = rng.uniform(0.05, 0.3, n)
  outcomes = (rng.random(n) < truth[segments, businesses] * predicted).astype(np.float32)
  alpha = np.asarray(mixer.fit_segment_multipliers(predicted, outcomes, segments, businesses, 3, 2,
                                                   prior_strength=0.0))
  for s in range(3):
    for b in range(2):
      cell = (segments == s) & (businesses == b)
      np.testing.assert_allclose(alpha[s, b], outcomes[cell].sum() / predicted[cell].sum(),
                                 rtol=1e-5)
  np.testing.assert_allclose(alpha, truth, rtol=0.15)
  shrunk = mixer.fit_segment_multipliers(predicted[:30], outcomes[:30], segments[:30],
                                         businesses[:30], 3, 2, prior_strength=20.0)
  assert np.all(np.asarray(shrunk) > 0)


def test_multiplier_net_recovers_segment_table():
  rng = np.random.default_rng(3)
  n = 6000
  segments, businesses = rng.integers(0, 3, n), rng.integers(0, 2, n)
  truth = np.array([[0.5, 1.0], [1.0, 2.0], [1.5, 0.8]])
  predicted = rng.uniform(0.05, 0.3, n)
  outcomes = (rng.random(n) < truth[segments, businesses] * predicted).astype(np.float32)
  features = np.eye(3, dtype=np.float32)[segments]
  model, params = mixer.fit_multiplier_net(features, predicted, outcomes, businesses, 2,
                                           hidden=(), num_steps=400, learning_rate=0.05)
  learned = np.asarray(model.apply(params, np.eye(3, dtype=np.float32)))
  table = np.asarray(mixer.fit_segment_multipliers(predicted, outcomes, segments, businesses, 3, 2,
                                                   prior_strength=0.0))
  assert np.all(learned > 0)
  np.testing.assert_allclose(learned, table, rtol=0.03)


def test_mix_scores_broadcasts():
  calibrated = jnp.ones((2, 3, 4))
  alpha = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(mixer.mix_scores(calibrated, alpha)[..., 0], alpha)
