"""Jit-compiled train and predict steps over a device mesh.

The train step takes the replicated state and a batch sharded on the ``data``
axis, computes the objective's loss and gradients, applies the optimizer and
returns the new state (donated, so the old buffers are reused) and scalar
metrics. XLA inserts the cross-device reductions: the same function runs on one
device or many, and gives the same numbers up to float summation order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hgrank_jax.train.sharding import batch_sharding, replicated_sharding
from hgrank_jax.train.state import Objective


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation, mesh: Mesh,
                    state_sharding: Any) -> Callable:
  """``train_step(state, batch) -> (state, metrics)``, jitted with donated state.

  ``metrics`` holds float32 scalars: "loss", "grad_norm", "finite" (1.0 when the
  loss and gradients are finite) and every entry of the objective's aux dict.
  A step whose loss or gradients are not finite leaves the parameters unchanged,
  so the loop can stop with the last good state.
  """

  def train_step(state, batch):
    step_rng = jax.random.fold_in(state["rng"], state["step"])
    grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
    (loss, (new_model_state, aux)), grads = grad_fn(state["params"], state["model_state"], batch,
                                                    step_rng)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(state)
    new_state.update(step=state["step"] + 1,
                     params=keep(new_params, state["params"]),
                     opt_state=keep(new_opt_state, state["opt_state"]),
                     model_state=keep(new_model_state, state["model_state"]))
    metrics = {"loss": loss.astype(jnp.float32), "grad_norm": grad_norm.astype(jnp.float32),
               "finite": finite.astype(jnp.float32)}
    metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in aux.items()})
    return new_state, metrics

  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated_sharding(mesh)), donate_argnums=(0,))


def make_predict_step(objective: Objective, mesh: Mesh) -> Callable:
  """``predict(params, model_state, batch) -> logits [B]`` sharded like the batch."""
  data = batch_sharding(mesh)
  return jax.jit(lambda params, model_state, batch: objective.predict(params, model_state, batch),
                 out_shardings=data)
