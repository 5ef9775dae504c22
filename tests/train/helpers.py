"""A small dataset and a plain-jnp logistic objective for testing the loop's mechanics."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hgrank_jax.data import CategoricalFeature, Dataset, FeatureSpec, split_rows
from hgrank_jax.train.state import Objective


def tiny_dataset(num_users=40, num_items=30, rows=1500, seed=0) -> Dataset:
  rng = np.random.default_rng(seed)
  users = rng.integers(0, num_users, rows).astype(np.int32)
  items = rng.integers(0, num_items, rows).astype(np.int32)
  affinity = rng.normal(size=num_users)[users] + rng.normal(size=num_items)[items]
  labels = (rng.random(rows) < 1 / (1 + np.exp(-affinity))).astype(np.float32)
  spec = FeatureSpec(categorical=(CategoricalFeature("user_id", num_users, "user"),
                                  CategoricalFeature("item_id", num_items, "item")),
                     labels=("label",), user_field="user_id", item_field="item_id")
  columns = {"user_id": users, "item_id": items, "label": labels}
  idx = split_rows(users, labels, seed=seed)
  return Dataset("tiny", spec, {s: {k: v[i] for k, v in columns.items()} for s, i in idx.items()})


def logistic_objective(num_users=40, num_items=30, nan_after_calls=None) -> Objective:
  """Per-user and per-item biases; optionally the loss turns NaN after some calls."""

  def init(rng, batch):
    variables = {"params": {"user": jnp.zeros(num_users), "item": jnp.zeros(num_items),
                            "bias": jnp.zeros(())}}
    if nan_after_calls is not None:
      variables["counter"] = {"calls": jnp.zeros((), jnp.int32)}
    return variables

  def predict(params, model_state, batch):
    return params["user"][batch["user_id"]] + params["item"][batch["item_id"]] + params["bias"]

  def loss(params, model_state, batch, rng):
    logits = predict(params, model_state, batch)
    per_row = jnp.maximum(logits, 0) - logits * batch["label"] + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    mask = batch["mask"].astype(jnp.float32)
    value = jnp.sum(per_row * mask) / jnp.maximum(mask.sum(), 1.0)
    new_state = model_state
    if nan_after_calls is not None:
      calls = model_state["counter"]["calls"] + 1
      value = jnp.where(calls > nan_after_calls, jnp.nan, value)
      new_state = {"counter": {"calls": calls}}
    return value, (new_state, {"mean_logit": jnp.mean(logits)})

  return Objective(init=init, loss=loss, predict=predict, name="logistic")


def loop_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      dataset="tiny", split_seed=0, seed=0, num_devices=0, batch_size=64, eval_batch_size=128,
      num_train_steps=30, eval_every_steps=5, log_every_steps=5, learning_rate=0.05,
      weight_decay=0.0, schedule="constant", warmup_steps=0, grad_clip_norm=0.0,
      max_checkpoints=2,
      early_stopping=dict(metric="gauc", patience=0, min_delta=0.0)))
  config.update_from_flattened_dict(overrides) if overrides else None
  return config
