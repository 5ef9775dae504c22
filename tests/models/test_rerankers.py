"""PRM and Seq2Slate: shapes, masking, equivariance, decoding rules, a short training run."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data import SimulatorConfig, make_request_lists
from hgrank_jax.models.rerankers import PRM, Seq2Slate
from hgrank_jax.rerank import learned
from tests.rerank.reference import satisfies_constraints

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


def _apply(model, params, *args, method, **kwargs):
  """``model.apply`` under jit, keyword arguments (static sizes, masks) closed over."""
  return jax.jit(lambda p, *a: model.apply(p, *a, method=method, **kwargs))(params, *args)


@pytest.mark.slow
def test_seq2slate_masked_decoding_honours_min_max_and_run_on_random_instances():
  # Feasibility by brute force over every category sequence of length k; the
  # greedy, beam and sampled decoders must all emit a valid list whenever one exists.
  rng = np.random.default_rng(4)
  lists, n, k, num_categories, max_run = 400, 10, 5, 3, 2
  features = rng.normal(size=(lists, n, F)).astype(np.float32)
  score = rng.normal(size=(lists, n)).astype(np.float32)
  user = rng.normal(size=(lists, U)).astype(np.float32)
  where = np.ones((lists, n), bool)
  categories = rng.choice(num_categories, size=(lists, n), p=[0.6, 0.3, 0.1])
  lo = rng.integers(0, 3, size=(lists, num_categories))
  hi = np.maximum(lo, rng.integers(1, 5, size=(lists, num_categories)))
  sequences = np.array(list(itertools.product(range(num_categories), repeat=k)))
  runs_ok = np.array([satisfies_constraints(q, np.zeros(num_categories), np.full(num_categories, k), max_run)
                      for q in sequences])
  seq_counts = np.stack([(sequences == c).sum(1) for c in range(num_categories)], 1)
  available = np.stack([(categories == c).sum(1) for c in range(num_categories)], 1)
  feasible = (((seq_counts[None] <= available[:, None]) & (seq_counts[None] >= lo[:, None])
               & (seq_counts[None] <= hi[:, None])).all(-1) & runs_ok[None]).any(1)
  assert 0.2 < feasible.mean() < 0.95
  model = Seq2Slate(list_length=k, hidden=16, num_heads=2, num_layers=1, max_len=n)
  params = model.init(jax.random.PRNGKey(0), features[:2], score[:2], user[:2], where[:2])
  spec = dict(categories=categories, num_categories=num_categories, min_count=lo, max_count=hi,
              max_run=max_run)
  args = (features, score, user, where)
  decoded = {
      "greedy": _apply(model, params, *args, method=Seq2Slate.decode, **spec),
      "beam": _apply(model, params, *args, method=Seq2Slate.decode, beam_width=3, **spec),
      "sample": _apply(model, params, *args, method=Seq2Slate.sample, key=jax.random.PRNGKey(1),
                            **spec)[0],
  }
  for name, lists_out in decoded.items():
    lists_out = np.asarray(lists_out)
    for b in np.nonzero(feasible)[0]:
      row = lists_out[b]
      assert (row >= 0).all() and len(set(row)) == k, (name, b)
      assert satisfies_constraints(categories[b, row], lo[b], hi[b], max_run), (name, b)


def _tiny(seed, n=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(2, n, F)).astype(np.float32), rng.normal(size=(2, n)).astype(np.float32),
          rng.normal(size=(2, U)).astype(np.float32), np.ones((2, n), bool))


@pytest.mark.slow
def test_beam_width_one_is_greedy_and_beams_never_repeat():
  features, score, user, where = _inputs(5)
  model = Seq2Slate(list_length=5, hidden=16, num_heads=2, num_layers=1, max_len=N)
  params = model.init(jax.random.PRNGKey(2), features, score, user, where)
  # Every list (also the 5 valid items of list 1) admits a full list under the quota.
  categories = np.tile(np.arange(N) % C, (B, 1))
  for spec in ({}, dict(categories=categories, num_categories=C, max_count=2, max_run=1)):
    greedy = np.asarray(_apply(model, params, features, score, user, where,
                                    method=Seq2Slate.decode, **spec))
    beam_one = np.asarray(_apply(model, params, features, score, user, where, beam_width=1,
                                      return_beams=True, method=Seq2Slate.decode, **spec)[0])
    np.testing.assert_array_equal(beam_one[:, 0], greedy)
    beams, scores = _apply(model, params, features, score, user, where, beam_width=4,
                                return_beams=True, method=Seq2Slate.decode, **spec)
    beams, scores = np.asarray(beams), np.asarray(scores)
    assert (np.diff(scores, axis=-1) <= 1e-6).all()
    for b in range(B):
      live = [tuple(row) for row, s in zip(beams[b], scores[b]) if np.isfinite(s)]
      assert len(set(live)) == len(live)               # distinct beams
      for row in live:
        picked = [i for i in row if i >= 0]
        assert len(set(picked)) == len(picked) == min(5, where[b].sum())
        assert where[b, picked].all()
        if spec:
          chosen = categories[b, picked]
          assert np.bincount(chosen).max() <= 2 and (chosen[1:] != chosen[:-1]).all()
    # A beam's score is its log-probability under teacher forcing.
    teacher = np.asarray(_apply(model, params, features, score, user, where, beams[:, 0],
                                     method=Seq2Slate.log_prob, **spec))
    np.testing.assert_allclose(teacher, scores[:, 0], rtol=1e-4, atol=1e-4)


def test_exhaustive_beam_finds_the_most_likely_list_and_probabilities_sum_to_one():
  features, score, user, where = _tiny(7)
  model = Seq2Slate(list_length=3, hidden=16, num_heads=2, num_layers=1, max_len=4)
  params = model.init(jax.random.PRNGKey(3), features, score, user, where)
  categories = np.array([[0, 1, 2, 0], [0, 1, 1, 2]])   # both admit 3 distinct categories
  perms = np.array(list(itertools.permutations(range(4), 3)))
  repeat = lambda x: np.repeat(x, len(perms), axis=0)  # noqa: E731  list b, permutation p
  for spec in ({}, dict(categories=categories, num_categories=3, max_count=1)):
    rep_spec = dict(spec, categories=repeat(categories)) if spec else {}
    log_probs = np.asarray(_apply(
        model, params, repeat(features), repeat(score), repeat(user), repeat(where),
        np.tile(perms, (2, 1)), method=Seq2Slate.log_prob, **rep_spec)).reshape(2, len(perms))
    np.testing.assert_allclose(np.exp(log_probs).sum(1), 1.0, rtol=1e-4)
    best = np.asarray(_apply(model, params, features, score, user, where, beam_width=len(perms),
                                  method=Seq2Slate.decode, **spec))
    np.testing.assert_array_equal(best, perms[np.argmax(log_probs, 1)])
    if spec:   # lists breaking the cap get no mass
      for b in range(2):
        for p, lp in zip(perms, log_probs[b]):
          if np.bincount(categories[b, p]).max() > 1:
            assert np.exp(lp) < 1e-6


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


@pytest.mark.slow
def test_reinforce_on_true_utility_improves_on_its_start_and_the_initial_order():
  lists = make_request_lists(SimulatorConfig(num_list_requests=700, num_requests=1000,
                                             list_candidates=20, num_items=2000))
  x = learned.model_inputs(lists.inputs, num_categories=20, num_business=4)
  train = {name: value[:500] for name, value in x.items()}
  valid = {name: value[500:] for name, value in x.items()}
  config = learned.TrainConfig(model="seq2slate", list_length=5, hidden=32, num_layers=1,
                               batch_size=32, reinforce_steps=100, reinforce_samples=8,
                               reinforce_learning_rate=1e-3)
  model = learned.build_model(config, 20)
  params = model.init(jax.random.PRNGKey(0), *(train[name][:2] for name in
                                                ("features", "initial_score", "user", "where")))
  padded = lambda order: np.concatenate([np.zeros((500, 5), int), order])  # noqa: E731
  decode = jax.jit(lambda p: learned.predict(model, config, p, valid, num_categories=20))

  def utility(order):
    return lists.true_utility(padded(np.asarray(order)))[500:].mean()

  start = utility(decode(params))
  # Unconstrained sampling: any gain is learned from the reward, not from a quota mask.
  params, history = learned.train_reinforce(
      model, params, config, train, lists.truth["relevance"][:500],
      position_bias=lists.truth["position_bias"], repeat_decay=lists.truth["repeat_decay"],
      key=jax.random.PRNGKey(1), num_categories=20, constrain=False, log=lambda _: None)
  final = utility(decode(params))
  assert history[-1]["reward"] > history[0]["reward"]
  assert final > start + 0.1
  assert final > utility(np.tile(np.arange(5), (200, 1)))
