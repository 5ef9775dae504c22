"""Training state and optimizer: one pytree that jit, sharding and orbax all see.

:class:`Objective` is what the loop trains: how to initialise a model's variables,
its loss on a batch and its serving logit. :func:`make_optimizer` builds AdamW
with the config's learning-rate schedule; :func:`init_train_state` builds the
state pytree ``{"step", "params", "model_state", "opt_state", "rng",
"best_params", "best_model_state"}``. ``model_state`` holds non-trainable
collections (e.g. the ResidualVQ EMA codebooks); ``best_*`` keep the
best-on-validation weights so early stopping can return them after a restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from hgrank_jax.parallel import sharding as sharding_lib

Batch = Mapping[str, jax.Array]
Variables = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Objective:
  """A model plus its training loss, as three pure functions.

  Attributes:
    init: ``(rng, batch) -> variables``, a dict with "params" and optionally
      other collections (model state).
    loss: ``(params, model_state, batch, rng) -> (loss, (new_model_state, aux))``;
      ``loss`` is a float32 scalar averaged over valid rows (``batch["mask"]``),
      ``aux`` a dict of float32 scalars logged to metrics.jsonl.
    predict: ``(params, model_state, batch) -> logits [B]``, the served logit of
      the positive class (probability = sigmoid(logit)).
    name: for logs.
  """

  init: Callable[..., Variables]
  loss: Callable[..., Any]
  predict: Callable[..., jax.Array]
  name: str = "objective"


def make_schedule(config) -> optax.Schedule:
  """Learning rate per step: config.schedule "constant" or "cosine" (decay to 0 at
  num_train_steps), after a linear warm-up of config.warmup_steps (default 0)."""
  lr = float(config.learning_rate)
  steps = int(config.num_train_steps)
  warmup = int(config.get("warmup_steps", 0))
  if config.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif config.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, max(steps - warmup, 1))
  else:
    raise ValueError(f"config.schedule must be 'constant' or 'cosine', got {config.schedule!r}")
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW (the paper's optimizer) with optional global-norm clipping."""
  parts = []
  if config.get("grad_clip_norm"):
    parts.append(optax.clip_by_global_norm(float(config.grad_clip_norm)))
  parts.append(optax.adamw(make_schedule(config), weight_decay=float(config.weight_decay)))
  return optax.chain(*parts)


def init_train_state(objective: Objective, optimizer: optax.GradientTransformation,
                     rng: jax.Array, batch: Batch) -> dict[str, Any]:
  """Initial state pytree (pure; call under jit or eval_shape)."""
  init_rng, train_rng = jax.random.split(rng)
  variables = dict(objective.init(init_rng, batch))
  params = variables.pop("params")
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "model_state": variables,
      "opt_state": optimizer.init(params),
      "rng": train_rng,
      "best_params": params,
      "best_model_state": variables,
  }


def init_replicated_train_state(objective: Objective, optimizer: optax.GradientTransformation,
                                mesh: jax.sharding.Mesh, rng: jax.Array, batch: Batch):
  """``init_train_state`` compiled with the state replicated on every device of ``mesh``.

  Returns ``(state, sharding)``: the state pytree and the matching pytree of
  replicated ``NamedSharding``s (what a train step built by
  ``steps.make_train_step`` takes as its state sharding).
  """
  init = lambda key, example: init_train_state(objective, optimizer, key, example)
  replicated = sharding_lib.replicated_sharding(mesh)
  sharding = jax.tree.map(lambda _: replicated, jax.eval_shape(init, rng, batch))
  return jax.jit(init, out_shardings=sharding)(rng, batch), sharding
