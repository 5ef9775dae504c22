"""PRM and Seq2Slate: shapes, masking, equivariance, decoding rules, a short training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data import SimulatorConfig, make_request_lists
from hgrank_jax.models.rerankers import PRM, Seq2Slate
from hgrank_jax.rerank import learned

B, N, F, U, C = 3, 8, 5, 4, 3


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  where = np.ones((B, N), bool)
  where[1, 5:] = False
  return (rng.normal(size=(B, N, F)).astype(np.float32), rng.normal(size=(B, N)).astype(np.float32),
          rng.normal(size=(B, U)).astype(np.float32), where)


def test_prm_shapes_masking_and_equivariance():
  features, score, user, where = _inputs()
  model = PRM(hidden=16, num_heads=2, num_layers=1, max_len=N, use_position=False)
  params = model.init(jax.random.PRNGKey(0), features, score, user, where)
  out = np.asarray(model.apply(params, features, score, user, where))
  assert out.shape == (B, N) and np.isfinite(out).all()
  assert (out[1, 5:] == -1e9).all()
  # Padded candidates' features must not leak into the valid ones' scores.
  noisy = features.copy()
  noisy[1, 5:] += 100.0
  np.testing.assert_allclose(np.asarray(model.apply(params, noisy, score, user, where))[1, :5],
                             out[1, :5], rtol=1e-5, atol=1e-5)
  # Without position embeddings the encoder is permutation-equivariant.
  perm = np.random.default_rng(1).permutation(N)
  full = np.ones_like(where)
  permuted = np.asarray(model.apply(params, features[:, perm], score[:, perm], user, full))
  np.testing.assert_allclose(permuted, np.asarray(model.apply(params, features, score, user,
                                                              full))[:, perm], rtol=1e-5, atol=1e-5)


def test_prm_position_embedding_breaks_equivariance():
  features, score, user, _ = _inputs()
  where = np.ones((B, N), bool)
  model = PRM(hidden=16, num_heads=2, num_layers=1, max_len=N)
  params = model.init(jax.random.PRNGKey(0), features, score, user, where)
  perm = np.roll(np.arange(N), 1)
  permuted = np.asarray(model.apply(params, features[:, perm], score[:, perm], user, where))
  assert not np.allclose(permuted, np.asarray(model.apply(params, features, score, user,
                                                          where))[:, perm], atol=1e-4)


def test_seq2slate_soft_pointer_and_decoding_rules():
  features, score, user, where = _inputs(2)
  model = Seq2Slate(list_length=6, hidden=16, num_heads=2, num_layers=1, max_len=N)
  params = model.init(jax.random.PRNGKey(0), features, score, user, where)
  pointer = np.asarray(model.apply(params, features, score, user, where))
  assert pointer.shape == (B, 6, N)
  np.testing.assert_allclose(pointer.sum(-1), 1.0, rtol=1e-5)
  assert pointer[1, :, 5:].max() < 1e-6
  decoded = np.asarray(model.apply(params, features, score, user, where, method=Seq2Slate.decode))
  for row, ok in zip(decoded, where):
    picked = row[row >= 0]
    assert len(set(picked)) == len(picked) == min(6, ok.sum()) and ok[picked].all()
  categories = np.random.default_rng(3).integers(0, C, size=(B, N))
  capped = np.asarray(model.apply(params, features, score, user, where, categories=categories,
                                  num_categories=C, max_count=2, max_run=1,
                                  method=Seq2Slate.decode))
  for row, cat in zip(capped, categories):
    chosen = cat[row[row >= 0]]
    assert np.bincount(chosen, minlength=C).max() <= 2
    assert (chosen[1:] != chosen[:-1]).all()
    assert len(set(row[row >= 0])) == (row >= 0).sum()


def test_soft_list_loss_matches_hard_ndcg_on_a_hard_pointer():
  relevance = np.array([[0.9, 0.1, 0.5, 0.0]], np.float32)
  order = [2, 0]
  pointer = jax.nn.one_hot(jnp.array([order]), 4)
  categories = np.array([[0, 0, 1, 1]])
  loss, aux = learned.soft_list_loss(pointer, relevance, categories, np.ones((1, 4), bool),
                                     num_categories=2, max_count=0, quota_weight=0.5)
  gains = 2.0 ** relevance[0] - 1
  discount = 1 / np.log2([2.0, 3.0])
  ndcg = (gains[order] * discount).sum() / (np.sort(gains)[::-1][:2] * discount).sum()
  np.testing.assert_allclose(float(aux["soft_ndcg"]), ndcg, rtol=1e-5)
  np.testing.assert_allclose(float(loss), -ndcg + 0.5 * (1.0 + 1.0), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["prm", "seq2slate"])
def test_short_training_beats_the_initial_order(model_name):
  lists = make_request_lists(SimulatorConfig(num_list_requests=700, num_requests=1000,
                                             list_candidates=20, num_items=2000))
  x = learned.model_inputs(lists.inputs, num_categories=20, num_business=4)
  train = {name: value[:500] for name, value in x.items()}
  valid = {name: value[500:] for name, value in x.items()}
  config = learned.TrainConfig(model=model_name, list_length=5, hidden=32, num_layers=1,
                               num_steps=150, max_count=1, quota_weight=0.05, dual_every=150)
  model, params, _ = learned.train_reranker(config, train, lists.truth["relevance"][:500], valid,
                                            key=jax.random.PRNGKey(0), num_categories=20,
                                            log=lambda _: None)
  final = np.asarray(learned.predict(model, config, params, valid, num_categories=20,
                                     constrain=True))
  padded = lambda order: np.concatenate([np.zeros((500, 5), int), order])  # noqa: E731
  utility = lists.true_utility(padded(final))[500:].mean()
  initial = lists.true_utility(padded(np.tile(np.arange(5), (200, 1))))[500:].mean()
  assert utility > initial
