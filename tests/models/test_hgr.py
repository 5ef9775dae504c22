"""Tests of HGRModel: gradient routing of the auxiliary loss, wiring, state, Eq. 10 loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data.features import CategoricalFeature, FeatureSpec
from hgrank_jax.models import RVQ_COLLECTION, HGRModel, Scorer, hgr_loss, make_hgr_model

SPEC = FeatureSpec(
    categorical=(CategoricalFeature("user_id", 40, "user"), CategoricalFeature("item_id", 30, "item"),
                 CategoricalFeature("position", 4, "context")),
    labels=("label",))
N = 24
BATCH = {"user_id": jnp.arange(N) % 13, "item_id": (jnp.arange(N) * 7) % 30,
         "position": jnp.arange(N) % 4}
LABELS = jnp.asarray((np.arange(N) % 3 == 0).astype(np.float32))
WHERE = jnp.asarray(np.arange(N) < 20)


def build(**kwargs):
  defaults = dict(hidden_layers=(8,), user_tower_layers=(6,), num_levels=2, codebook_size=3,
                  bias_features=("position",))
  defaults.update(kwargs)
  return make_hgr_model(SPEC, "dnn", **defaults)


def aux_gradients(model):
  variables = jax.jit(model.init)(jax.random.key(0), BATCH)

  def aux_loss(params):
    out = model.apply({"params": params, RVQ_COLLECTION: variables[RVQ_COLLECTION]}, BATCH,
                      train=True)
    probs = jax.nn.sigmoid(out.quantized_logits)
    return -jnp.mean(LABELS * jnp.log(probs) + (1 - LABELS) * jnp.log(1 - probs))

  return jax.jit(jax.grad(aux_loss))(variables["params"])


def max_abs(tree):
  return max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(tree))


def test_auxiliary_loss_trains_only_the_user_tower_by_default():
  grads = aux_gradients(build())["scorer"]
  assert max_abs(grads["user_tower"]) > 0
  assert max_abs(grads["item_tower"]) == 0.0
  assert max_abs(grads["main_network"]) == 0.0
  assert max_abs(grads["bias_mlp"]) == 0.0 and max_abs(grads["bias_fields"]) == 0.0


def test_auxiliary_loss_can_train_the_main_network_on_request():
  grads = aux_gradients(build(aux_updates_main_net=True))["scorer"]
  assert max_abs(grads["user_tower"]) > 0
  assert max_abs(grads["main_network"]) > 0
  assert max_abs(grads["item_tower"]) == 0.0


def test_forward_wiring_and_codebook_state():
  model = build()
  variables = jax.jit(model.init)(jax.random.key(0), BATCH)
  step = jax.jit(lambda v: model.apply(v, BATCH, train=True, where=WHERE, mutable=[RVQ_COLLECTION]))
  out, new_state = step(variables)
  assert out.logits.shape == (N,) and out.quantized_logits.shape == (N,)
  assert out.codes.shape == (N, 2) and out.log_sigma.shape == (2,)
  assert int(new_state[RVQ_COLLECTION]["quantizer"]["step"]) == 1
  assert bool(new_state[RVQ_COLLECTION]["quantizer"]["initialized"])
  # Evaluation leaves the state alone even when the collection is mutable.
  _, same = jax.jit(lambda v: model.apply(v, BATCH, mutable=[RVQ_COLLECTION]))(variables)
  assert int(same[RVQ_COLLECTION]["quantizer"]["step"]) == 0

  # s^q is the main network on the quantised e_u: rebuild it from the codebook by hand.
  params = variables["params"]
  state = {"params": params, **new_state}
  out = jax.jit(lambda v: model.apply(v, BATCH, train=True))(state)
  book = np.asarray(new_state[RVQ_COLLECTION]["quantizer"]["codebook"])
  codes = np.asarray(out.codes)
  reconstruction = book[0][codes[:, 0]] + book[1][codes[:, 1]]
  scorer = model.scorer

  def by_hand(v):
    e_u, e_i, context = scorer.apply(v, BATCH, method=Scorer.encode)
    main = lambda eu: scorer.apply(v, eu, e_i, context, method=Scorer.main)[..., 0]
    bias = scorer.apply(v, BATCH, method=Scorer.bias_logit)[..., 0]
    return main(e_u) + bias, main(jnp.asarray(reconstruction)) + bias, e_u

  primary, quantized, e_u = jax.jit(by_hand)({"params": params["scorer"]})
  np.testing.assert_allclose(out.logits, primary, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.quantized_logits, quantized, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.user_embedding, e_u, rtol=1e-6)
  # Codes are the nearest-codeword cascade of e_u.
  residual = np.asarray(e_u, np.float64)
  for level in range(2):
    expected = ((residual[:, None] - book[level][None])**2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(codes[:, level], expected)
    residual = residual - book[level][expected]

  # Serving uses the primary path without the bias tower and needs no codebook state.
  served = jax.jit(lambda p: model.apply({"params": p}, BATCH, method=HGRModel.serve))(params)
  bias = jax.jit(lambda v: scorer.apply(v, BATCH, method=Scorer.bias_logit))({"params": params["scorer"]})
  np.testing.assert_allclose(served, primary - bias[..., 0], rtol=1e-5, atol=1e-6)


def numpy_list_ce(logits, labels, groups, eps=1e-8):
  """Eq. 8 over the given groups: mean over groups of -sum ytilde log(sigmoid / sum sigmoid)."""
  losses = []
  for group in groups:
    s, y = logits[group], labels[group]
    p = 1 / (1 + np.exp(-s))
    losses.append(-np.sum(y / (y.sum() + eps) * np.log(p / p.sum())))
  return np.mean(losses)


def test_hgr_loss_equals_direct_computation_from_parts():
  pytest.importorskip("hgrank_jax.losses")
  model = build(kmeans_init=False)
  variables = jax.jit(model.init)(jax.random.key(0), BATCH)
  params = dict(variables["params"])
  params["log_sigma"] = jnp.array([0.3, -0.2])
  out = jax.jit(lambda v: model.apply(v, BATCH, train=True))({**variables, "params": params})
  loss, terms = hgr_loss(out, LABELS, where=WHERE, aux_weight=0.7)

  valid = np.asarray(WHERE)
  s, sq = np.asarray(out.logits, np.float64)[valid], np.asarray(out.quantized_logits, np.float64)[valid]
  y, codes = np.asarray(LABELS, np.float64)[valid], np.asarray(out.codes)[valid]
  logloss = lambda z: np.mean(np.log1p(np.exp(z)) - y * z)
  hierarchical = 0.0
  for level, log_sigma in enumerate([0.3, -0.2]):
    prefixes = [tuple(row[:level + 1]) for row in codes]
    groups = [np.array([i for i, p in enumerate(prefixes) if p == q]) for q in sorted(set(prefixes))]
    hierarchical += np.exp(-2 * log_sigma) / 2 * numpy_list_ce(s, y, groups) + log_sigma
  np.testing.assert_allclose(terms["logloss"], logloss(s), rtol=1e-5)
  np.testing.assert_allclose(terms["aux_logloss"], logloss(sq), rtol=1e-5)
  np.testing.assert_allclose(terms["group_ce"], hierarchical, rtol=1e-5)
  np.testing.assert_allclose(loss, logloss(s) + 0.7 * logloss(sq) + hierarchical, rtol=1e-5)


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="scorer"):
    make_hgr_model(SPEC, "resnet")
  with pytest.raises(ValueError, match="num_levels"):
    build(num_levels=0)
  with pytest.raises(ValueError, match="codebook_size"):
    build(codebook_size=0)
  with pytest.raises(ValueError, match="num_tasks"):
    HGRModel(scorer=Scorer(SPEC, "mmoe", num_tasks=2))
