"""MMR, DPP, calibrated and coverage rerankers against numpy greedy references."""

import numpy as np
import pytest

from hgrank_jax import rerank


def _unit(e):
  return e / np.linalg.norm(e, axis=-1, keepdims=True)


def _numpy_greedy(objective, n, k, valid):
  """Greedy by brute-force objective evaluation: f(S + i) for every free i."""
  chosen = []
  for _ in range(k):
    free = [i for i in range(n) if valid[i] and i not in chosen]
    if not free:
      chosen.append(-1)
      continue
    values = [objective([c for c in chosen if c >= 0] + [i]) for i in free]
    chosen.append(free[int(np.argmax(values))])
  return chosen


def _random_lists(seed, lists=6, n=12, d=4, num_categories=4):
  rng = np.random.default_rng(seed)
  relevance = rng.uniform(0.05, 0.95, size=(lists, n)).astype(np.float32)
  embeddings = rng.normal(size=(lists, n, d)).astype(np.float32)
  categories = rng.integers(0, num_categories, size=(lists, n))
  where = rng.uniform(size=(lists, n)) < 0.85
  return relevance, embeddings, categories, where


@pytest.mark.parametrize("lam", [0.3, 0.7, 1.0])
def test_mmr_matches_numpy(lam):
  relevance, embeddings, _, where = _random_lists(0)
  got = np.asarray(rerank.mmr(relevance, embeddings, 5, lam=lam, where=where))
  for b in range(len(relevance)):
    similarity = _unit(embeddings[b]) @ _unit(embeddings[b]).T

    def objective(s, b=b, similarity=similarity):
      last, rest = s[-1], s[:-1]
      redundancy = max(similarity[last, j] for j in rest) if rest else 0.0
      return lam * relevance[b, last] - (1 - lam) * redundancy

    np.testing.assert_array_equal(got[b], _numpy_greedy(objective, 12, 5, where[b]))


def test_dpp_matches_numpy_log_det_gains():
  relevance, embeddings, _, where = _random_lists(1, d=8)
  quality = np.exp(2.0 * relevance)
  got = np.asarray(rerank.dpp_greedy(quality, embeddings, 6, where=where))
  for b in range(len(relevance)):
    unit = _unit(embeddings[b].astype(np.float64))
    kernel = quality[b][:, None] * (unit @ unit.T) * quality[b][None, :] + 1e-6 * np.eye(12)
    expected = _numpy_greedy(lambda s, kernel=kernel: np.linalg.slogdet(kernel[np.ix_(s, s)])[1],
                             12, 6, where[b])
    np.testing.assert_array_equal(got[b], expected)


def test_dpp_stops_when_the_kernel_becomes_singular():
  # Embeddings of rank 2 and no jitter: a third item adds no volume.
  rng = np.random.default_rng(2)
  embeddings = np.concatenate([rng.normal(size=(8, 2)), np.zeros((8, 3))], axis=1)
  got = np.asarray(rerank.dpp_greedy(np.ones(8), embeddings, 5, jitter=0.0, epsilon=1e-5))
  assert (got[:2] >= 0).all() and len(set(got[:2])) == 2
  np.testing.assert_array_equal(got[2:], -1)


@pytest.mark.parametrize("lam", [0.2, 0.8])
def test_calibrated_matches_numpy(lam):
  relevance, _, categories, where = _random_lists(3)
  rng = np.random.default_rng(4)
  item_dist = rng.dirichlet(np.ones(4), size=categories.shape).astype(np.float32)
  target = rng.dirichlet(np.ones(4), size=len(relevance)).astype(np.float32)
  got = np.asarray(rerank.calibrated(relevance, item_dist, target, 5, lam=lam, where=where))
  for b in range(len(relevance)):

    def objective(s, b=b):
      q = (1 - 0.01) * item_dist[b, s].mean(0) + 0.01 * target[b]
      kl = np.sum(target[b] * np.log(target[b] / q))
      return (1 - lam) * relevance[b, s].sum() - lam * kl

    np.testing.assert_array_equal(got[b], _numpy_greedy(objective, 12, 5, where[b]))


def test_coverage_matches_numpy():
  relevance, _, categories, where = _random_lists(5)
  weights = np.random.default_rng(6).uniform(0.1, 1.0, size=(len(relevance), 4)).astype(np.float32)
  got = np.asarray(rerank.coverage(relevance, categories, 6, weights=weights, where=where))
  for b in range(len(relevance)):

    def objective(s, b=b):
      return sum(weights[b, c] * (1 - np.prod([1 - relevance[b, i] for i in s if categories[b, i] == c]))
                 for c in range(4))

    np.testing.assert_array_equal(got[b], _numpy_greedy(objective, 12, 6, where[b]))


def test_batched_axes_and_masks():
  relevance, embeddings, categories, where = _random_lists(7, lists=6)
  where[0] = False                    # fully masked list
  where[1, 3:] = False                # fewer valid items than k
  cases = {
      "mmr": lambda r, e, c, w: rerank.mmr(r, e, 5, where=w),
      "dpp": lambda r, e, c, w: rerank.dpp_greedy(np.exp(r), e, 5, where=w),
      "coverage": lambda r, e, c, w: rerank.coverage(r, c, 5, num_categories=4, where=w),
      "calibrated": lambda r, e, c, w: rerank.calibrated(r, np.eye(4)[c], np.full(4, 0.25), 5,
                                                         where=w),
  }
  for name, fn in cases.items():
    flat = np.asarray(fn(relevance, embeddings, categories, where))
    nested = np.asarray(fn(relevance.reshape(2, 3, 12), embeddings.reshape(2, 3, 12, 4),
                           categories.reshape(2, 3, 12), where.reshape(2, 3, 12)))
    assert nested.shape == (2, 3, 5), name
    np.testing.assert_array_equal(nested.reshape(6, 5), flat, err_msg=name)
    np.testing.assert_array_equal(flat[0], -1, err_msg=name)
    assert set(flat[1, :3]) == {0, 1, 2} and (flat[1, 3:] == -1).all(), name
    for row, ok in zip(flat, where):
      picked = row[row >= 0]
      assert len(set(picked)) == len(picked) and ok[picked].all(), name


def test_non_finite_gains_never_pick_a_masked_item():
  relevance = np.array([[-np.inf, np.nan, -np.inf, 0.3]], np.float32)
  where = np.array([[False, True, True, False]])
  for got in (rerank.mmr(relevance, np.eye(4)[None], 3, lam=1.0, where=where),
              rerank.constrained(relevance, np.zeros((1, 4), int), 3, where=where).indices):
    got = np.asarray(got)[0]
    assert sorted(got[:2]) == [1, 2] and got[2] == -1


def test_chunked_batches_equal_list_by_list():
  # 70 lists run in chunks of 32 (the last one partial); each list must get
  # exactly what it gets alone.
  relevance, embeddings, categories, where = _random_lists(8, lists=70)
  cases = {
      "mmr": lambda r, e, c, w: rerank.mmr(r, e, 5, where=w),
      "dpp": lambda r, e, c, w: rerank.dpp_greedy(np.exp(r), e, 5, where=w),
      "coverage": lambda r, e, c, w: rerank.coverage(r, c, 5, num_categories=4, where=w),
      "constrained": lambda r, e, c, w: rerank.constrained(
          r, c, 5, max_count=2, max_run=1, num_categories=4, where=w, best_effort=True).indices,
  }
  for name, fn in cases.items():
    batched = np.asarray(fn(relevance, embeddings, categories, where))
    alone = np.stack([np.asarray(fn(relevance[b:b + 1], embeddings[b:b + 1],
                                    categories[b:b + 1], where[b:b + 1]))[0]
                      for b in (0, 31, 32, 64, 69)])
    np.testing.assert_array_equal(batched[[0, 31, 32, 64, 69]], alone, err_msg=name)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_dpp_skips_items_with_non_finite_quality_or_embedding(bad):
  rng = np.random.default_rng(5)
  quality = rng.uniform(0.5, 2.0, size=(3, 12)).astype(np.float32)
  embeddings = rng.normal(size=(3, 12, 4)).astype(np.float32)
  broken_q, broken_e = quality.copy(), embeddings.copy()
  broken_q[0, 3] = bad
  broken_e[1, 7, 2] = bad
  mask = np.ones((3, 12), bool)
  mask[0, 3] = mask[1, 7] = False
  got = np.asarray(rerank.dpp_greedy(broken_q, broken_e, 5))
  want = np.asarray(rerank.dpp_greedy(quality, embeddings, 5, where=mask))
  np.testing.assert_array_equal(got, want)  # the same as masking the broken items
  assert np.all(got[2] >= 0) and 3 not in got[0] and 7 not in got[1]
