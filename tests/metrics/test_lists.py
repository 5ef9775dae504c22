"""List metrics against direct numpy loops over each final list."""

import jax
import numpy as np
import pytest

from hgrank_jax.metrics import lists


@pytest.fixture(name="data")
def _data():
  rng = np.random.default_rng(0)
  b, n, k, d, c = 5, 9, 4, 3, 3
  indices = np.stack([rng.permutation(n)[:k] for _ in range(b)])
  indices[1, 2:] = -1      # a short list
  indices[2, :] = -1       # an empty list
  return dict(indices=indices, categories=rng.integers(0, c, size=(b, n)),
              embeddings=rng.normal(size=(b, n, d)), dist=rng.dirichlet(np.ones(c), size=(b, n)),
              target=rng.dirichlet(np.ones(c), size=b), weights=rng.uniform(size=(b, c)), c=c)


def _items(row):
  return [i for i in row if i >= 0]


def test_category_exposure_and_quota(data):
  weights = np.array([1.0, 0.5, 0.25, 0.125])
  got = np.asarray(lists.category_exposure(data["indices"], data["categories"], 3,
                                           position_weights=weights))
  got_violation = np.asarray(lists.quota_violation(data["indices"], data["categories"], 3,
                                                   min_count=1, max_count=[1, 2, 2]))
  for b, row in enumerate(data["indices"]):
    expected = np.zeros(3)
    for p, i in enumerate(row):
      if i >= 0:
        expected[data["categories"][b, i]] += weights[p]
    np.testing.assert_allclose(got[b], expected, rtol=1e-6)
    counts = np.bincount(data["categories"][b, _items(row)], minlength=3)
    violation = np.maximum(1 - counts, 0).sum() + np.maximum(counts - [1, 2, 2], 0).sum()
    assert got_violation[b] == violation


def test_diversity_calibration_coverage(data):
  indices = data["indices"]
  diversity = np.asarray(lists.intra_list_diversity(indices, data["embeddings"]))
  kl = np.asarray(jax.jit(lists.calibration_kl)(indices, data["dist"], data["target"]))
  cover = np.asarray(lists.coverage(indices, data["categories"], 3, weights=data["weights"]))
  share_error = np.asarray(lists.exposure_share_error(indices, data["categories"], data["target"]))
  for b, row in enumerate(indices):
    items = _items(row)
    if not items:
      assert np.isnan(diversity[b]) and np.isnan(kl[b]) and np.isnan(share_error[b])
      assert cover[b] == 0
      continue
    e = data["embeddings"][b, items]
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    pairs = [(i, j) for i in range(len(items)) for j in range(len(items)) if i != j]
    np.testing.assert_allclose(diversity[b], np.mean([1 - e[i] @ e[j] for i, j in pairs]),
                               rtol=1e-5)
    p = data["target"][b]
    q = 0.99 * data["dist"][b, items].mean(0) + 0.01 * p
    np.testing.assert_allclose(kl[b], np.sum(p * np.log(p / q)), rtol=1e-4, atol=1e-6)
    present = np.isin(np.arange(3), data["categories"][b, items])
    np.testing.assert_allclose(cover[b], data["weights"][b][present].sum() / data["weights"][b].sum(),
                               rtol=1e-6)
    share = np.bincount(data["categories"][b, items], minlength=3) / len(items)
    np.testing.assert_allclose(share_error[b], np.abs(share - p).mean(), rtol=1e-5)
