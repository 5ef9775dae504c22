"""Objectives from configs: which model is trained with which loss.

``config.objective.name`` selects one of

* ``"pointwise"`` — a scorer (``config.model``) trained with ``config.objective.loss``:
  "logloss" or a Table 1 combination "logloss+X" (X in list_ce, softmax_ce,
  pairwise_logistic) with weight ``config.objective.ranking_weight``. The ranking
  term's lists are the whole batch (``lists="batch"``, the paper's in-batch
  baselines) or each user's rows in the batch (``lists="user"``).
* ``"jrc"`` — a two-logit scorer trained with JRC (Sheng et al. 2023); its served
  logit is ``f1 - f0``, so ``sigmoid`` of it is ``softmax(f0, f1)[1]``.
* ``"hgr"`` — the paper's model: the scorer plus ResidualVQ user codes, trained
  with Eq. 10 (``config.hgr``: levels, codebook size, auxiliary and hierarchical
  weights, EMA decay). Its ``predict`` carries a ``diagnostics`` function, the
  harder-negatives report of a batch, which evaluation averages over the split.

All objectives mask padded rows with ``batch["mask"]`` and serve the primary
logit without the bias tower.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hgrank_jax import losses
from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.models import RVQ_COLLECTION, hgr_loss, make_hgr_model, make_scorer
from hgrank_jax.train.state import Objective

OBJECTIVES = ("pointwise", "jrc", "hgr")
LIST_CONTEXTS = ("batch", "user")


def _scorer_kwargs(config) -> dict[str, Any]:
  kwargs = config.model.to_dict()
  kwargs.pop("name")
  return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def scorer_from_config(config, spec: FeatureSpec):
  """The plain scorer that a pointwise or JRC ``config`` trains (two task heads for
  JRC), for training and for analyses that reload a run's weights."""
  kwargs = _scorer_kwargs(config)
  if config.objective.name == "jrc":
    kwargs["num_tasks"] = 2
  return make_scorer(config.model.name, spec, **kwargs)


def _segments(batch, spec: FeatureSpec, lists: str):
  if lists not in LIST_CONTEXTS:
    raise ValueError(f"config.objective.lists must be one of {LIST_CONTEXTS}, got {lists!r}")
  if lists == "batch":
    return None
  if not spec.user_field:
    raise ValueError("config.objective.lists='user' needs a dataset with a user field")
  return batch[spec.user_field]


def _rngs(rng, dropout_rate: float):
  return {"dropout": rng} if dropout_rate > 0 else {}


def hgr_model_from_config(config, spec: FeatureSpec):
  """The :class:`~hgrank_jax.models.HGRModel` that ``config`` trains (for analyses too)."""
  hgr = config.hgr
  return make_hgr_model(spec, config.model.name, num_levels=int(hgr.num_levels),
                        codebook_size=int(hgr.codebook_size),
                        aux_updates_main_net=bool(hgr.get("aux_updates_main_net", False)),
                        decay=float(hgr.get("decay", 0.99)),
                        dead_code_threshold=float(hgr.get("dead_code_threshold", 1.0)),
                        kmeans_init=bool(hgr.get("kmeans_init", True)),
                        batched_aux=hgr.get("batched_aux", None), **_scorer_kwargs(config))


def build_objective(config, spec: FeatureSpec) -> Objective:
  """The :class:`Objective` named by ``config.objective.name`` for a dataset's spec."""
  name = config.objective.name
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective.name must be one of {OBJECTIVES}, got {name!r}")
  label = spec.label
  dropout_rate = float(config.model.get("dropout_rate", 0.0))
  lists = config.objective.get("lists", "batch")

  if name in ("pointwise", "jrc"):
    num_tasks = 2 if name == "jrc" else 1
    model = scorer_from_config(config, spec)
    if name == "pointwise":
      loss_fn = losses.get_loss(config.objective.loss, weight=(
          float(config.objective.ranking_weight) if "+" in config.objective.loss else None))
    else:
      alpha = float(config.objective.get("jrc_alpha", 0.5))
      loss_fn = lambda logits, labels, **kw: losses.jrc_loss(logits, labels, alpha=alpha, **kw)

    def serve_logit(logits):
      return logits[..., 1] - logits[..., 0] if num_tasks == 2 else logits

    def init(rng, batch):
      return model.init({"params": rng, "dropout": rng}, batch, train=False)

    def loss(params, model_state, batch, rng):
      out = model.apply({"params": params}, batch, train=True, rngs=_rngs(rng, dropout_rate))
      value = loss_fn(out.logits, batch[label], where=batch["mask"],
                      segments=_segments(batch, spec, lists))
      served = serve_logit(out.logits)
      return value, (model_state, {"mean_prob": _masked_mean(jax.nn.sigmoid(served), batch["mask"])})

    def predict(params, model_state, batch):
      return serve_logit(model.apply({"params": params}, batch, train=False,
                                     use_bias_tower=False).logits)

    return Objective(init, loss, predict, name=f"{config.model.name}/{name}:"
                     f"{config.objective.loss if name == 'pointwise' else 'jrc'}")

  hgr = config.hgr
  model = hgr_model_from_config(config, spec)
  aux_weight = float(hgr.get("aux_weight", 1.0))
  hierarchical_weight = float(hgr.get("hierarchical_weight", 1.0))
  code_source = hgr.get("code_source", "learned")
  if code_source not in ("learned", "random"):
    raise ValueError(f"config.hgr.code_source must be 'learned' or 'random', got {code_source!r}")
  if code_source == "random" and not spec.user_field:
    raise ValueError("config.hgr.code_source='random' needs a dataset with a user field")

  def init(rng, batch):
    return model.init({"params": rng, "dropout": rng, "rvq": rng}, batch, train=False,
                      where=batch["mask"])

  # With lambda = 0 the auxiliary logit is never used: skip its half of the main network.
  with_aux = aux_weight != 0
  codebook_size = int(hgr.codebook_size)

  def codes_of(out, batch):
    if code_source == "random":  # ablation: same shape, no similarity between grouped users
      # The quantiser's groups belong to its own codes: GroupCE regroups these.
      return out._replace(codes=random_user_codes(batch[spec.user_field], int(hgr.num_levels),
                                                  codebook_size), group_ids=None)
    return out

  def loss(params, model_state, batch, rng):
    rvq_rng, dropout_rng = jax.random.split(rng)
    out, updated = model.apply({"params": params, **model_state}, batch, train=True,
                               where=batch["mask"], mutable=[RVQ_COLLECTION], with_aux=with_aux,
                               rngs={"rvq": rvq_rng, **_rngs(dropout_rng, dropout_rate)})
    out = codes_of(out, batch)
    value, terms = hgr_loss(out, batch[label], where=batch["mask"], aux_weight=aux_weight,
                            hierarchical_weight=hierarchical_weight, codebook_size=codebook_size)
    aux = dict(terms)
    for level in range(out.log_sigma.shape[0]):
      aux[f"log_sigma_l{level + 1}"] = out.log_sigma[level]
      for stat, values in out.stats.items():
        aux[f"rvq_{stat}_l{level + 1}"] = values[level]
    return value, ({**model_state, **updated}, aux)

  def predict(params, model_state, batch):
    return model.apply({"params": params, **model_state}, batch, method=model.serve)

  def harder_negatives(params, model_state, batch):
    """The "harder negatives per level" report on one batch: evaluated, never trained on.

    :func:`hgrank_jax.losses.negative_hardness_per_level` of the serving logits
    and the current codes (codebooks not updated); L extra backward passes, so
    it runs at evaluation rather than in every train step.
    """
    out = model.apply({"params": params, **model_state}, batch, train=False, where=batch["mask"],
                      with_aux=False)
    out = codes_of(out, batch)
    hardness = losses.negative_hardness_per_level(out.logits, batch[label], codes=out.codes,
                                                  where=batch["mask"], codebook_size=codebook_size)
    return {f"hard_{stat}_l{level + 1}": values[level]
            for stat, values in hardness.items() for level in range(values.shape[0])}

  # Evaluation (hgrank_jax.train.evaluation) averages these over a split's batches.
  predict.diagnostics = jax.jit(harder_negatives)

  return Objective(init, loss, predict, name=f"{config.model.name}/hgr(L={hgr.num_levels},"
                   f"K={hgr.codebook_size})")


def random_user_codes(user_ids: jax.Array, num_levels: int, codebook_size: int,
                      seed: int = 0) -> jax.Array:
  """Fixed random codes ``[..., L]`` int32 in ``[0, K)`` per user id (the Table 3 ablation).

  Each user keeps the same codes for the whole run, drawn independently of its
  embedding, so groups have the learned codes' shape but not their similarity.
  """
  flat = user_ids.reshape(-1)
  keys = jax.vmap(lambda u: jax.random.fold_in(jax.random.PRNGKey(seed), u))(flat)
  codes = jax.vmap(lambda k: jax.random.randint(k, (num_levels,), 0, codebook_size))(keys)
  return codes.reshape(user_ids.shape + (num_levels,)).astype(jnp.int32)


def _masked_mean(values, mask):
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
