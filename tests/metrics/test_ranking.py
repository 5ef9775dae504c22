"""Ranking metrics (Rax wrappers) against scikit-learn and brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from hgrank_jax import metrics


def _lists(seed, num_lists=6, size=10):
  rng = np.random.default_rng(seed)
  scores = rng.permutation(num_lists * size).reshape(num_lists, size)
  scores = scores.astype(np.float32) / 7.0  # distinct: no tie conventions
  labels = (rng.random((num_lists, size)) < 0.3).astype(np.float32)
  labels[0] = 0.0  # a list without any relevant item scores 0
  return scores, labels


@pytest.mark.parametrize("topn", [None, 3])
def test_ndcg_matches_sklearn_on_binary_labels(topn):
  scores, labels = _lists(0)
  # For binary labels Rax's gain 2^y - 1 equals scikit-learn's linear gain.
  np.testing.assert_allclose(metrics.ndcg(scores, labels, topn=topn),
                             ndcg_score(labels, scores, k=topn), atol=1e-6)


def _np_mrr_recall(scores, labels, topn):
  mrrs, recalls = [], []
  for s, y in zip(scores, labels):
    order = np.argsort(-s)
    top = order[:topn] if topn else order
    hits = [rank + 1 for rank, i in enumerate(top) if y[i] >= 1]
    mrrs.append(1.0 / hits[0] if hits else 0.0)
    recalls.append(len(hits) / y.sum() if y.sum() else 0.0)
  return np.mean(mrrs), np.mean(recalls)


@pytest.mark.parametrize("topn", [None, 2])
def test_mrr_and_recall_match_brute_force(topn):
  scores, labels = _lists(1)
  want_mrr, want_recall = _np_mrr_recall(scores, labels, topn)
  np.testing.assert_allclose(metrics.mrr(scores, labels, topn=topn), want_mrr,
                             atol=1e-6)
  np.testing.assert_allclose(metrics.recall(scores, labels, topn=topn),
                             want_recall, atol=1e-6)


def test_masked_items_are_removed_and_jit_vmap_agree():
  scores, labels = _lists(2, num_lists=1, size=12)
  keep = np.arange(12) % 3 != 0
  for fn in (metrics.ndcg, metrics.mrr, metrics.recall):
    np.testing.assert_allclose(
        fn(scores, labels, topn=3, where=keep[None]),
        fn(scores[:, keep], labels[:, keep], topn=3), atol=1e-6)
  scores, labels = _lists(3)
  per_list = jax.vmap(lambda s, y: metrics.ndcg(s, y, topn=4))(scores, labels)
  np.testing.assert_allclose(jnp.mean(per_list),
                             jax.jit(lambda s, y: metrics.ndcg(s, y, topn=4))(
                                 scores, labels), atol=1e-6)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="labels"):
    metrics.ndcg(jnp.zeros(4), jnp.zeros(3))
  with pytest.raises(ValueError, match="topn"):
    metrics.recall(jnp.zeros(4), jnp.zeros(4), topn=0)
