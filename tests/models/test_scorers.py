"""Tests of the scorer zoo: shapes, finite gradients, jit/vmap agreement, layer formulas.

All five scorers are initialised and exercised inside one jitted function each, so
the suite pays for two compilations instead of ten.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature
from hgrank_jax.models import MAIN_NETWORKS, Scorer, make_scorer

NAMES = ("dnn", "wide_deep", "deepfm", "dcnv2", "mmoe")
SPEC = FeatureSpec(
    categorical=(CategoricalFeature("user_id", 40, "user"), CategoricalFeature("item_id", 30, "item"),
                 CategoricalFeature("item_cat", 5, "item", embedding_dim=4),
                 CategoricalFeature("hour", 24, "context", embedding_dim=3),
                 CategoricalFeature("position", 6, "context")),
    numeric=(NumericFeature("age", 1, "user"), NumericFeature("dense_ctx", 2, "context")),
    labels=("label",))
MINIMAL_SPEC = FeatureSpec(
    categorical=(CategoricalFeature("user_id", 40, "user"), CategoricalFeature("item_id", 30, "item")),
    labels=("label",))
SMALL = dict(hidden_layers=(8,), expert_layers=(4,), task_layers=(4,), num_experts=2,
             num_cross_layers=2, fm_dim=4, wide_cross_dim=3)


def make_batch(shape, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "user_id": jnp.asarray(rng.integers(0, 40, shape), jnp.int32),
      "item_id": jnp.asarray(rng.integers(0, 30, shape), jnp.int32),
      "item_cat": jnp.asarray(rng.integers(0, 5, shape), jnp.int32),
      "hour": jnp.asarray(rng.integers(0, 24, shape), jnp.int32),
      "position": jnp.asarray(rng.integers(0, 6, shape), jnp.int32),
      "age": jnp.asarray(rng.normal(size=shape), jnp.float32),
      "dense_ctx": jnp.asarray(rng.normal(size=shape + (2,)), jnp.float32),
  }


FLAT = make_batch((6,))
NESTED = jax.tree.map(lambda a: a.reshape((2, 3) + a.shape[1:]), FLAT)
LABELS = jnp.asarray([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])


def models():
  return {name: make_scorer(name, SPEC, bias_features=("position",), **SMALL) for name in NAMES}


def random_params(model, batch, seed=0):
  """Parameters of the right shapes filled by numpy (tracing init is cheap; compiling it is not)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def results():
  """Per scorer: logits flat, nested and vmapped, training/serving logits, grads, params."""
  scorers = models()
  all_params = {name: random_params(model, FLAT, seed=i)
                for i, (name, model) in enumerate(scorers.items())}

  @jax.jit
  def run(all_params):
    out = {}
    for name, model in scorers.items():
      variables = {"params": all_params[name]}

      def loss(params):
        logits = model.apply({"params": params}, FLAT, train=True).logits
        return jnp.mean(jax.nn.softplus(logits) - LABELS * logits)

      out[name] = dict(
          params=variables["params"],
          train=model.apply(variables, FLAT, train=True),
          served=model.apply(variables, FLAT),
          no_bias=model.apply(variables, FLAT, train=True, use_bias_tower=False).logits,
          nested=model.apply(variables, NESTED),
          vmapped=jax.vmap(lambda b: model.apply(variables, b))(NESTED),
          grads=jax.grad(loss)(variables["params"]))
    return out

  return run(all_params)


def test_real_init_gives_finite_logits_of_the_right_shape():
  model = make_scorer("dnn", MINIMAL_SPEC, hidden_layers=(4,))
  batch = {k: FLAT[k] for k in ("user_id", "item_id")}
  out, variables = jax.jit(lambda k: model.init_with_output(k, batch))(jax.random.key(1))
  assert out.logits.shape == (6,) and np.isfinite(np.asarray(out.logits)).all()
  embedding = variables["params"]["user_tower"]["fields"]["embed_user_id"]["embedding"]
  assert embedding.shape == (40, MINIMAL_SPEC.categorical[0].dim)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_finite_gradients_and_jit_vmap_agreement(results, name):
  r = results[name]
  assert r["train"].logits.shape == (6,)
  assert r["served"].user_embedding.shape == (6, SPEC.categorical[0].dim + 1)
  assert r["served"].item_embedding.shape == (6, SPEC.categorical[1].dim + 4)
  assert r["nested"].logits.shape == (2, 3)
  np.testing.assert_allclose(r["nested"].logits.reshape(-1), r["served"].logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r["vmapped"].logits, r["nested"].logits, rtol=1e-5, atol=1e-6)
  grads = jax.tree.leaves(r["grads"])
  assert all(np.isfinite(g).all() for g in grads)
  assert sum(float(np.abs(g).sum()) for g in grads) > 0
  # Every tower, the main network and the bias tower receive gradient.
  for part in ("user_tower", "item_tower", "main_network", "bias_mlp"):
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(r["grads"][part])) > 0, part


@pytest.mark.parametrize("name", NAMES)
def test_bias_tower_only_in_training(results, name):
  r = results[name]
  np.testing.assert_allclose(r["no_bias"], r["served"].logits, rtol=1e-6)
  assert np.abs(np.asarray(r["train"].logits - r["served"].logits)).max() > 0


def test_serving_logits_ignore_bias_features(results):
  model = models()["dnn"]
  params = results["dnn"]["params"]
  moved = dict(FLAT, position=(FLAT["position"] + 1) % 6)
  served = jax.jit(lambda p, b: model.apply({"params": p}, b).logits)
  np.testing.assert_allclose(served(params, moved), served(params, FLAT), rtol=1e-6)


def test_dcnv2_cross_layers_match_numpy(results):
  params = results["dcnv2"]["params"]["main_network"]
  model = models()["dcnv2"]
  e_u, e_i, context = jax.jit(lambda v: model.apply(v, FLAT, method=Scorer.encode))(
      {"params": results["dcnv2"]["params"]})
  x0 = np.concatenate([e_u, e_i, *context], -1).astype(np.float64)
  x = x0
  for layer in range(2):
    w, b = params[f"cross_{layer}"]["kernel"], params[f"cross_{layer}"]["bias"]
    x = x0 * (x @ np.asarray(w) + np.asarray(b)) + x
  deep = np.maximum(x0 @ np.asarray(params["MLP_0"]["dense_0"]["kernel"])
                    + np.asarray(params["MLP_0"]["dense_0"]["bias"]), 0)
  w, b = params["logit"]["kernel"], params["logit"]["bias"]
  expected = (np.concatenate([x, deep], -1) @ np.asarray(w) + np.asarray(b))[:, 0]
  np.testing.assert_allclose(results["dcnv2"]["served"].logits, expected, rtol=1e-4, atol=1e-5)
  low_rank = make_scorer("dcnv2", MINIMAL_SPEC, cross_low_rank=2, **SMALL)
  shapes = jax.eval_shape(low_rank.init, jax.random.key(0), make_batch((3,)))["params"]
  cross = shapes["main_network"]["cross_0_v"]["kernel"]
  assert cross.shape == (MINIMAL_SPEC.categorical[0].dim + MINIMAL_SPEC.categorical[1].dim, 2)


def test_deepfm_second_order_term_equals_pairwise_sum(results):
  params = results["deepfm"]["params"]["main_network"]
  model = models()["deepfm"]
  e_u, e_i, context = jax.jit(lambda v: model.apply(v, FLAT, method=Scorer.encode))(
      {"params": results["deepfm"]["params"]})
  fields = [e_u, e_i, *context]
  v = [np.asarray(f, np.float64) @ np.asarray(params[f"fm_proj_{i}"]["kernel"])
       for i, f in enumerate(fields)]
  pairwise = sum((v[i] * v[j]).sum(-1) for i in range(len(v)) for j in range(i + 1, len(v)))
  x = np.concatenate(fields, -1)
  first = x @ np.asarray(params["first_order"]["kernel"]) + np.asarray(params["first_order"]["bias"])
  hidden = np.maximum(np.concatenate(v, -1) @ np.asarray(params["MLP_0"]["dense_0"]["kernel"])
                      + np.asarray(params["MLP_0"]["dense_0"]["bias"]), 0)
  deep = hidden @ np.asarray(params["deep_logit"]["kernel"])
  np.testing.assert_allclose(results["deepfm"]["served"].logits, (first + deep)[:, 0] + pairwise,
                             rtol=1e-4, atol=1e-5)


def test_mmoe_outputs_one_logit_per_task_on_the_minimal_spec():
  model = make_scorer("mmoe", MINIMAL_SPEC, num_tasks=3, **SMALL)
  batch = {k: FLAT[k] for k in ("user_id", "item_id")}
  out = jax.jit(model.apply)({"params": random_params(model, batch)}, batch)
  assert out.logits.shape == (6, 3)
  assert np.isfinite(np.asarray(out.logits)).all()
  assert out.user_embedding.shape == (6, MINIMAL_SPEC.categorical[0].dim)


def test_bad_arguments_raise_clear_errors():
  assert set(MAIN_NETWORKS) == set(NAMES)
  with pytest.raises(ValueError, match="scorer='xgboost'"):
    make_scorer("xgboost", SPEC)
  with pytest.raises(ValueError, match="scorer"):
    Scorer(SPEC, "transformer")
  with pytest.raises(ValueError, match="bias_features"):
    make_scorer("dnn", SPEC, bias_features=("slot",))
  no_items = FeatureSpec(categorical=(CategoricalFeature("user_id", 4, "user"),))
  with pytest.raises(ValueError, match="item"):
    make_scorer("dnn", no_items)
  with pytest.raises(ValueError, match="cross_low_rank"):
    make_scorer("dcnv2", SPEC, cross_low_rank=0)
  model = make_scorer("dnn", MINIMAL_SPEC, hidden_layers=(4,))
  with pytest.raises(KeyError, match="item_id"):
    jax.eval_shape(model.init, jax.random.key(0), {"user_id": FLAT["user_id"]})
  with pytest.raises(ValueError, match="item_embedding"):
    jax.eval_shape(model.init, jax.random.key(0),
                   {"user_id": FLAT["user_id"], "item_id": FLAT["item_id"][:4]})
  with pytest.raises(ValueError, match="dense_ctx"):
    jax.eval_shape(models()["dnn"].init, jax.random.key(0),
                   dict(FLAT, dense_ctx=jnp.zeros((6, 3))))
