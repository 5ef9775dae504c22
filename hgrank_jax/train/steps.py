"""Jit-compiled train and predict steps over a device mesh.

The train step takes the replicated state and a batch sharded on the ``data``
axis, computes the objective's loss and gradients, applies the optimizer and
returns the new state (donated, so the old buffers are reused) and scalar
metrics. XLA inserts the cross-device reductions: the same function runs on one
device or many, and gives the same numbers up to float summation order.

On an accelerator one small step is bound by host work (dispatch, transfers),
not arithmetic, so :func:`make_multi_step` runs ``n`` steps in one jitted call
with ``lax.scan``: the batches come stacked ``[n, B, ...]`` or, with the split
resident on the devices (:mod:`hgrank_jax.data.chunks`), as row indices
``[n, B]`` gathered on the device. Its per-step metrics stay on the device as
``[n]`` vectors until the loop reads them at a log, evaluation or checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hgrank_jax.data.chunks import gather_rows, stacked_sharding
from hgrank_jax.parallel.sharding import batch_sharding, replicated_sharding
from hgrank_jax.train.state import Objective


def train_step_fn(objective: Objective, optimizer: optax.GradientTransformation) -> Callable:
  """The pure ``(state, batch) -> (state, metrics)`` every jitted form runs (one step,
  a scan of steps, a vmap over seeds); see :func:`make_train_step` for its metrics.

  >>> import jax.numpy as jnp, optax
  >>> obj = Objective(init=None, predict=None,
  ...                 loss=lambda p, s, b, r: (jnp.mean((p["w"] - b["x"]) ** 2), (s, {})))
  >>> opt = optax.sgd(0.5); params = {"w": jnp.zeros(())}
  >>> state = {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": {},
  ...          "opt_state": opt.init(params), "rng": jax.random.PRNGKey(0)}
  >>> state, m = train_step_fn(obj, opt)(state, {"x": jnp.ones(4)})
  >>> float(state["params"]["w"]), float(m["loss"])
  (1.0, 1.0)
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

  return train_step


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation, mesh: Mesh,
                    state_sharding: Any) -> Callable:
  """``train_step(state, batch) -> (state, metrics)``, jitted with donated state.

  ``metrics`` holds float32 scalars: "loss", "grad_norm", "finite" (1.0 when the
  loss and gradients are finite) and every entry of the objective's aux dict.
  A step whose loss or gradients are not finite leaves the parameters unchanged,
  so the loop can stop with the last good state.
  """
  train_step = train_step_fn(objective, optimizer)
  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated_sharding(mesh)), donate_argnums=(0,))


def make_predict_step(objective: Objective, mesh: Mesh) -> Callable:
  """``predict(params, model_state, batch) -> logits [B]`` sharded like the batch.

  When the objective's predict carries per-batch ``diagnostics`` (the GroupCE
  harder-negatives report), the step carries them too, for evaluation.
  """
  data = batch_sharding(mesh)
  step = jax.jit(lambda params, model_state, batch: objective.predict(params, model_state, batch),
                 out_shardings=data)
  diagnostics = getattr(objective.predict, "diagnostics", None)
  if diagnostics is not None:
    step.diagnostics = diagnostics
  return step


def make_multi_step(objective: Objective, optimizer: optax.GradientTransformation, mesh: Mesh,
                    state_sharding: Any, *, device_columns: bool = False) -> Callable:
  r"""``n`` train steps in one dispatch: ``lax.scan`` over :func:`make_train_step`'s step.

  .. math::
      (\theta_{t+n}, m_{t+1..t+n}) = \mathrm{step}^{\circ n}(\theta_t;\, b_{t+1}, \dots, b_{t+n})

  The scan body is the same function as the single step, so ``n`` steps in one
  call give the parameters of ``n`` single calls up to float reassociation by
  XLA (measured <= 1e-6). ``n`` is the leading size of the inputs; each distinct
  ``n`` compiles once.

  Two forms:

  * ``device_columns=False``: ``multi_step(state, batches) -> (state, metrics)``
    with ``batches`` a dict of stacked batches ``[n, B, ...]`` (sharded as
    :func:`hgrank_jax.data.chunks.stacked_sharding`).
  * ``device_columns=True``: ``multi_step(state, columns, rows, mask)`` with
    ``columns`` a split resident on the devices (replicated ``[N, ...]`` arrays),
    ``rows`` int32 ``[n, B]`` and ``mask`` bool ``[n, B]``; step ``i`` trains on
    ``{c: columns[c][rows[i]]} | {"mask": mask[i]}``, gathered on the device.

  Returns:
    The jitted function; ``metrics`` maps each single-step metric name to a
    float32 ``[n]`` vector (step order), left on the device.

  >>> import jax, jax.numpy as jnp, optax
  >>> from hgrank_jax.parallel.sharding import data_mesh, replicated_sharding
  >>> obj = Objective(init=lambda rng, b: {"params": {"w": jnp.zeros(())}},
  ...                 loss=lambda p, s, b, r: (jnp.mean((p["w"] - b["x"]) ** 2), (s, {})),
  ...                 predict=lambda p, s, b: p["w"] + 0 * b["x"])
  >>> mesh = data_mesh(jax.devices()[:1]); opt = optax.sgd(0.1)
  >>> state = {"step": jnp.zeros((), jnp.int32), "params": {"w": jnp.zeros(())},
  ...          "model_state": {}, "opt_state": opt.init({"w": jnp.zeros(())}),
  ...          "rng": jax.random.PRNGKey(0), "best_params": {}, "best_model_state": {}}
  >>> sharding = jax.tree.map(lambda _: replicated_sharding(mesh), state)
  >>> run = make_multi_step(obj, opt, mesh, sharding)
  >>> state, m = run(state, {"x": jnp.ones((3, 2)), "mask": jnp.ones((3, 2), bool)})
  >>> int(state["step"]), m["loss"].shape
  (3, (3,))
  """
  train_step = train_step_fn(objective, optimizer)
  replicated = replicated_sharding(mesh)
  rows_sharding = stacked_sharding(mesh)
  one_batch = batch_sharding(mesh)

  def scan(state, batches):
    def body(carry, batch):
      batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: one_batch, batch))
      return train_step(carry, batch)
    return jax.lax.scan(body, state, batches)

  if not device_columns:
    return jax.jit(scan, in_shardings=(state_sharding, rows_sharding),
                   out_shardings=(state_sharding, replicated), donate_argnums=(0,))

  def gathered(state, columns, rows, mask):
    def body(carry, step_rows):
      batch = gather_rows(columns, step_rows[0], step_rows[1], one_batch)
      return train_step(carry, batch)
    return jax.lax.scan(body, state, (rows, mask))

  return jax.jit(gathered, in_shardings=(state_sharding, replicated, rows_sharding, rows_sharding),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))
