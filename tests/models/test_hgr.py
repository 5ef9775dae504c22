"""Tests of HGRModel: gradient routing of the auxiliary loss, wiring, state, Eq. 10 loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data.features import CategoricalFeature, FeatureSpec
from hgrank_jax.models import (RVQ_COLLECTION, HGRModel, HGROutput, Scorer, hgr_loss,
                               make_hgr_model, residual_cascade)

SPEC = FeatureSpec(
    categorical=(CategoricalFeature("user_id", 40, "user"), CategoricalFeature("item_id", 30, "item"),
                 CategoricalFeature("position", 4, "context")),
    labels=("label",))
N = 24
BATCH = {"user_id": jnp.arange(N) % 13, "item_id": (jnp.arange(N) * 7) % 30,
         "position": jnp.arange(N) % 4}
LABELS = jnp.asarray((np.arange(N) % 3 == 0).astype(np.float32))
WHERE = jnp.asarray(np.arange(N) < 20)


def build(scorer="dnn", **kwargs):
  defaults = dict(hidden_layers=(8,), user_tower_layers=(6,), num_levels=2, codebook_size=3,
                  bias_features=("position",), kmeans_init=False)
  defaults.update(kwargs)
  return make_hgr_model(SPEC, scorer, **defaults)


def random_variables(model, seed=0):
  """Random parameters and the documented initial codebook state, without compiling init."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), BATCH)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype),
                        shapes["params"])
  book = jnp.asarray(rng.normal(size=shapes[RVQ_COLLECTION]["quantizer"]["codebook"].shape),
                     jnp.float32)
  state = {"codebook": book, "ema_count": jnp.ones(book.shape[:2]), "ema_sum": book,
           "initialized": jnp.array(False), "step": jnp.array(0, jnp.int32)}
  return {"params": params, RVQ_COLLECTION: {"quantizer": state}}


def max_abs(tree):
  return max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def run():
  """Everything the tests look at, computed in one jitted function (one compilation)."""
  model, open_model = build(), build(aux_updates_main_net=True)
  variables = random_variables(model)
  scorer = model.scorer

  def aux_gradients(module, params):
    def aux_loss(params):
      out = module.apply({"params": params, RVQ_COLLECTION: variables[RVQ_COLLECTION]}, BATCH,
                         train=True)
      return jnp.mean(jax.nn.softplus(out.quantized_logits) - LABELS * out.quantized_logits)
    return jax.grad(aux_loss)(params)

  @jax.jit
  def everything(variables):
    params = variables["params"]
    stepped, new_state = model.apply(variables, BATCH, train=True, where=WHERE,
                                     mutable=[RVQ_COLLECTION])
    _, eval_state = model.apply(variables, BATCH, mutable=[RVQ_COLLECTION])
    after = model.apply({"params": params, **new_state}, BATCH, train=True)
    scorer_vars = {"params": params["scorer"]}
    e_u, e_i, context = scorer.apply(scorer_vars, BATCH, method=Scorer.encode)
    book = new_state[RVQ_COLLECTION]["quantizer"]["codebook"]
    reconstruction = book[0][after.codes[:, 0]] + book[1][after.codes[:, 1]]
    main = lambda eu: scorer.apply(scorer_vars, eu, e_i, context, method=Scorer.main)[..., 0]
    bias = scorer.apply(scorer_vars, BATCH, method=Scorer.bias_logit)[..., 0]
    return dict(
        stepped=stepped, new_state=new_state, eval_state=eval_state, after=after,
        e_u=e_u, book=book, primary=main(e_u) + bias, quantized=main(reconstruction) + bias,
        served=model.apply({"params": params}, BATCH, method=HGRModel.serve),
        bias=bias, grads=aux_gradients(model, params), open_grads=aux_gradients(open_model, params))

  return jax.tree.map(np.asarray, everything(variables)), variables


def test_auxiliary_loss_trains_only_the_user_tower_by_default(run):
  grads = run[0]["grads"]["scorer"]
  assert max_abs(grads["user_tower"]) > 0
  assert max_abs(grads["item_tower"]) == 0.0
  assert max_abs(grads["main_network"]) == 0.0
  assert max_abs(grads["bias_mlp"]) == 0.0 and max_abs(grads["bias_fields"]) == 0.0


def test_auxiliary_loss_can_train_the_main_network_on_request(run):
  grads = run[0]["open_grads"]["scorer"]
  assert max_abs(grads["user_tower"]) > 0
  assert max_abs(grads["main_network"]) > 0
  assert max_abs(grads["item_tower"]) == 0.0


def test_forward_wiring_and_codebook_state(run):
  r = run[0]
  assert r["stepped"].logits.shape == (N,) and r["stepped"].quantized_logits.shape == (N,)
  assert r["stepped"].codes.shape == (N, 2) and r["stepped"].log_sigma.shape == (2,)
  assert int(r["new_state"][RVQ_COLLECTION]["quantizer"]["step"]) == 1
  # Evaluation leaves the state alone even when the collection is mutable.
  assert int(r["eval_state"][RVQ_COLLECTION]["quantizer"]["step"]) == 0
  # s is main(e_u) + bias; s^q is the main network on the sum of the chosen codewords.
  after = r["after"]
  np.testing.assert_allclose(after.logits, r["primary"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(after.quantized_logits, r["quantized"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(after.user_embedding, r["e_u"], rtol=1e-6)
  assert np.abs(after.logits - after.quantized_logits).max() > 1e-4
  # Codes are the nearest-codeword cascade of e_u.
  residual = r["e_u"].astype(np.float64)
  for level in range(2):
    expected = ((residual[:, None] - r["book"][level][None])**2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(after.codes[:, level], expected)
    residual = residual - r["book"][level][expected]
  # Serving: the primary path without the bias tower, and no codebook state needed.
  np.testing.assert_allclose(r["served"], r["primary"] - r["bias"], rtol=1e-5, atol=1e-6)


def test_real_init():
  model = build(kmeans_init=True)
  variables = jax.jit(model.init)(jax.random.key(0), BATCH)
  np.testing.assert_array_equal(variables["params"]["log_sigma"], np.zeros(2))
  state = variables[RVQ_COLLECTION]["quantizer"]
  assert state["codebook"].shape == (2, 3, 6) and not bool(state["initialized"])
  assert set(variables["params"]["scorer"]) == {
      "user_tower", "item_tower", "main_network", "bias_fields", "bias_mlp", "bias_logit_layer"}


def numpy_list_ce(logits, labels, groups, eps=1e-8):
  """Eq. 8 over the given groups: mean over groups of -sum ytilde log(sigmoid / sum sigmoid)."""
  losses = []
  for group in groups:
    s, y = logits[group], labels[group]
    p = 1 / (1 + np.exp(-s))
    losses.append(-np.sum(y / (y.sum() + eps) * np.log(p / p.sum())))
  return np.mean(losses)


def test_hgr_loss_equals_direct_computation_from_parts(run):
  pytest.importorskip("hgrank_jax.losses")
  out = run[0]["after"]
  log_sigmas = np.asarray(run[1]["params"]["log_sigma"], np.float64)
  assert np.abs(log_sigmas).min() > 0  # random, so the weights are not all 1/2
  loss, terms = jax.jit(lambda o: hgr_loss(o, LABELS, where=WHERE, aux_weight=0.7))(out)

  valid = np.asarray(WHERE)
  s, sq = np.asarray(out.logits, np.float64)[valid], np.asarray(out.quantized_logits, np.float64)[valid]
  y, codes = np.asarray(LABELS, np.float64)[valid], np.asarray(out.codes)[valid]
  logloss = lambda z: np.mean(np.log1p(np.exp(z)) - y * z)
  hierarchical = 0.0
  for level, log_sigma in enumerate(log_sigmas):
    prefixes = [tuple(row[:level + 1]) for row in codes]
    groups = [np.array([i for i, p in enumerate(prefixes) if p == q]) for q in sorted(set(prefixes))]
    hierarchical += np.exp(-2 * log_sigma) / 2 * numpy_list_ce(s, y, groups) + log_sigma
  np.testing.assert_allclose(terms["logloss"], logloss(s), rtol=1e-5)
  np.testing.assert_allclose(terms["aux_logloss"], logloss(sq), rtol=1e-5)
  np.testing.assert_allclose(terms["group_ce"], hierarchical, rtol=1e-5)
  np.testing.assert_allclose(loss, logloss(s) + 0.7 * logloss(sq) + hierarchical, rtol=1e-5)


def _two_pass_loss(model, variables, aux_weight):
  """Slow reference: Eq. 10 with the main network applied twice, as the model did
  before its batched pass, the second time with ``stop_gradient`` on its parameters
  (unless ``aux_updates_main_net``) and on the item and context embeddings."""
  scorer, state = model.scorer, variables[RVQ_COLLECTION]
  book = state["quantizer"]["codebook"]
  stop = jax.lax.stop_gradient

  def loss(params):
    scorer_vars = {"params": params["scorer"]}
    e_u, e_i, context = scorer.apply(scorer_vars, BATCH, method=Scorer.encode)
    main = lambda v, *args: scorer.apply(v, *args, method=Scorer.main)[..., 0]
    bias = scorer.apply(scorer_vars, BATCH, method=Scorer.bias_logit)[..., 0]
    codes, _, reconstruction = residual_cascade(e_u, book)
    e_q = e_u + stop(reconstruction - e_u)  # Eq. 11
    aux_vars = scorer_vars if model.aux_updates_main_net else stop(scorer_vars)
    out = HGROutput(logits=main(scorer_vars, e_u, e_i, context) + bias,
                    quantized_logits=main(aux_vars, e_q, stop(e_i), stop(context)) + stop(bias),
                    codes=codes, log_sigma=params["log_sigma"], user_embedding=e_u, stats={})
    return hgr_loss(out, LABELS, where=WHERE, aux_weight=aux_weight, codebook_size=3)[0]

  return loss


@pytest.mark.parametrize("batched,open_main,aux_weight,scorer", [
    (True, False, 0.7, "dnn"), (True, True, 0.7, "dnn"), (False, False, 0.7, "dnn"),
    (True, False, 0.0, "dnn"), (True, False, 0.7, "mmoe")])
def test_step_loss_and_gradients_equal_the_two_pass_formulation(batched, open_main, aux_weight,
                                                                scorer):
  model = build(batched_aux=batched, aux_updates_main_net=open_main, scorer=scorer)
  variables = random_variables(model)

  def loss(params):
    out = model.apply({"params": params, RVQ_COLLECTION: variables[RVQ_COLLECTION]}, BATCH,
                      train=True, where=WHERE, update_codebooks=False,
                      with_aux=aux_weight != 0)
    return hgr_loss(out, LABELS, where=WHERE, aux_weight=aux_weight, codebook_size=3)[0]

  value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
  want_value, want_grads = jax.jit(jax.value_and_grad(
      _two_pass_loss(model, variables, aux_weight)))(variables["params"])
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_zero_aux_weight_skips_the_auxiliary_pass():
  # One fewer application of the main network: its dense layers' products (forward
  # and backward) appear once, not twice, in the step's program.
  def count_products(aux_weight, batched):
    model = build(batched_aux=batched)
    variables = random_variables(model)

    def loss(params):
      out = model.apply({"params": params, RVQ_COLLECTION: variables[RVQ_COLLECTION]}, BATCH,
                        train=True, where=WHERE, update_codebooks=False,
                        with_aux=aux_weight != 0)
      assert (out.quantized_logits is None) == (aux_weight == 0)
      return hgr_loss(out, LABELS, where=WHERE, aux_weight=aux_weight)[0]

    return str(jax.make_jaxpr(jax.grad(loss))(variables["params"])).count("dot_general")

  with_aux, without_aux = count_products(0.7, batched=False), count_products(0.0, batched=True)
  # The main network here is two dense layers: its second application (forward,
  # and backward to e_u^q) is 2 + 2 matrix products, all gone without it.
  assert with_aux - without_aux == 4
  with pytest.raises(ValueError, match="with_aux"):
    model = build()
    out = model.apply(random_variables(model), BATCH, with_aux=False)
    hgr_loss(out, LABELS, aux_weight=0.5)


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="scorer"):
    make_hgr_model(SPEC, "resnet")
  with pytest.raises(ValueError, match="num_levels"):
    build(num_levels=0)
  with pytest.raises(ValueError, match="codebook_size"):
    build(codebook_size=0)
  with pytest.raises(ValueError, match="num_tasks"):
    HGRModel(scorer=Scorer(SPEC, "mmoe", num_tasks=2))
