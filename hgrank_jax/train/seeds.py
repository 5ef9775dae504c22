"""The seeds of one run side by side: one vmapped program trains them all on one device.

A Table 1 row is one config trained with several seeds. Each run of a small model
leaves an accelerator mostly idle, so :func:`train_seeds` stacks the seeds' train
states on a leading axis and runs every step for all of them at once
(``jax.vmap`` of the train step inside the ``lax.scan`` of several steps per
dispatch), on the splits resident on the device. Each seed keeps its own
initialisation, dropout stream and data order (the permutation of
``numpy.random.default_rng([seed, epoch])``, exactly as a sequential run), its
own early stopping, and its own best-on-validation weights; a seed that has
stopped is frozen by a mask (its state no longer changes) while the others go on,
so every seed ends where its sequential run would, up to float reassociation.

Given one workdir per seed, it leaves in each what a finished
:func:`hgrank_jax.train.loop.train_and_evaluate` run leaves (``config.json``,
``metrics.jsonl``, ``predictions.npz``, ``results.json`` and a checkpoint of the
seed's last step), so ``train_and_evaluate`` on that workdir returns the saved
results without training, and cached reproductions read them as usual. It does
not checkpoint while it trains: an interrupted call starts again; preemptible
runs train seed by seed with ``train_and_evaluate``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hgrank_jax.data import ArrayBatcher, Dataset, chunks, load_dataset
from hgrank_jax.train import checkpoint as ckpt_lib
from hgrank_jax.train.early_stopping import EarlyStopping
from hgrank_jax.train.evaluation import METRIC_MODES, DeviceSplit, classification_metrics
from hgrank_jax.train.loop import (PREDICTIONS_FILE, RESULTS_FILE, steps_per_dispatch,
                                   validate_config)
from hgrank_jax.train.objectives import build_objective
from hgrank_jax.parallel.sharding import batch_sharding, data_mesh
from hgrank_jax.train.state import Objective, init_train_state, make_optimizer
from hgrank_jax.train.steps import train_step_fn
from hgrank_jax.train.writers import MetricsWriter


def _stack_rows(batchers: Sequence[ArrayBatcher], n: int):
  """Row indices and masks ``[S, n, B]`` of the next ``n`` steps of every seed's batcher."""
  rows, masks = [], []
  for batcher in batchers:
    pairs = [batcher.next_indices() for _ in range(n)]
    rows.append(np.stack([r for r, _ in pairs]).astype(np.int32))
    masks.append(np.stack([m for _, m in pairs]))
  return jnp.asarray(np.stack(rows)), jnp.asarray(np.stack(masks))


def _seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(config.to_dict())
  out.seed = seed
  return out


def train_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int], *,
                objective: Objective | None = None, dataset: Dataset | None = None,
                workdirs: Sequence[str | os.PathLike] | None = None) -> list[dict[str, Any]]:
  """Trains ``config`` once per seed in one vmapped program; returns one result per seed.

  For seed :math:`s`, step :math:`t` updates :math:`\\theta_s` only while seed
  :math:`s` is active:

  .. math::
      \\theta_s^{t+1} = a_s\\,\\mathrm{step}(\\theta_s^t; b_s^{t+1}) + (1 - a_s)\\,\\theta_s^t

  where :math:`a_s` turns 0 when the seed's early stopping stops it (evaluated
  every ``config.eval_every_steps`` steps, on validation, on the device).

  Args:
    config: a training config (``configs/``); ``config.seed`` is replaced by each
      seed; one device is used (``num_devices`` is ignored).
    seeds: the seeds, e.g. ``range(5)``.
    objective: overrides the objective built from ``config``.
    dataset: overrides ``load_dataset(config.dataset, seed=config.split_seed)``.
    workdirs: optional, one new directory per seed, left as a finished
      ``train_and_evaluate`` run of ``config`` with that seed.

  Returns:
    One dict per seed, in order: ``{"seed", "best_step", "steps", "stopped_early",
    "valid": {...}, "test": {...}, "evals": [(step, metrics), ...],
    "predictions": {"valid", "test"}}``, with the valid and test metrics of the
    best-on-validation weights (computed on the host in float64, as the loop's).

  Raises:
    FloatingPointError: a seed's loss or gradient was not finite (seed and step named).
    ValueError: a workdir already holds checkpoints (resume it with
      ``train_and_evaluate``), or was made by another config.

  >>> from tests.train.helpers import logistic_objective, loop_config, tiny_dataset
  >>> out = train_seeds(loop_config(num_train_steps=10), [0, 1],
  ...                   objective=logistic_objective(), dataset=tiny_dataset())
  >>> [r["seed"] for r in out], [r["steps"] for r in out]
  ([0, 1], [10, 10])
  """
  validate_config(config)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("train_seeds: no seeds given")
  if workdirs is not None:
    if len(workdirs) != len(seeds):
      raise ValueError(f"train_seeds: {len(seeds)} seeds but {len(workdirs)} workdirs")
    workdirs = [ckpt_lib.prepare_workdir(w, _seed_config(config, s).to_dict())
                for w, s in zip(workdirs, seeds)]
    for workdir in workdirs:
      if (workdir / ckpt_lib.CHECKPOINT_DIR).exists() and any(
          (workdir / ckpt_lib.CHECKPOINT_DIR).iterdir()):
        raise ValueError(f"train_seeds: {workdir} already holds checkpoints; resume it with "
                         "train_and_evaluate, or use a new workdir")
  mesh = data_mesh(jax.devices()[:1])
  if dataset is None:
    options = {"manual_dir": config.manual_dir} if config.get("manual_dir") else {}
    dataset = load_dataset(config.dataset, seed=int(config.split_seed), **options)
  spec = dataset.spec
  objective = objective or build_objective(config, spec)
  optimizer = make_optimizer(config)
  batch_size = int(config.batch_size)
  train_columns = dataset.split("train")
  batchers = [ArrayBatcher(train_columns, batch_size, seed=s, mesh=mesh) for s in seeds]
  example = next(ArrayBatcher(train_columns, batch_size, shuffle=False, mesh=mesh))
  resident = chunks.place_replicated(train_columns, mesh)
  splits = {name: DeviceSplit(objective.predict, dataset.split(name), spec,
                              int(config.eval_batch_size), mesh) for name in ("valid", "test")}

  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  init = lambda key: init_train_state(objective, optimizer, key, example)
  state = jax.jit(jax.vmap(init))(keys)
  step_fn = train_step_fn(objective, optimizer)
  one_batch = batch_sharding(mesh)

  def run(state, active, rows, mask):
    def body(carry, step_rows):
      def one_seed(seed_state, seed_rows, seed_mask, seed_active):
        batch = chunks.gather_rows(resident, seed_rows, seed_mask, one_batch)
        new_state, metrics = step_fn(seed_state, batch)
        frozen = jax.tree.map(lambda a, b: jnp.where(seed_active, a, b), new_state, seed_state)
        return frozen, metrics
      return jax.vmap(one_seed)(carry, step_rows[0], step_rows[1], active)
    # rows, mask: [S, n, B] -> scan over n
    return jax.lax.scan(body, state, (jnp.swapaxes(rows, 0, 1), jnp.swapaxes(mask, 0, 1)))

  run = jax.jit(run, donate_argnums=(0,))
  keep_best = jax.jit(lambda state, improved: {
      **state,
      "best_params": jax.tree.map(lambda p, b: jnp.where(
          improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b),
                                  state["params"], state["best_params"]),
      "best_model_state": jax.tree.map(lambda p, b: jnp.where(
          improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b),
                                       state["model_state"], state["best_model_state"])},
                      donate_argnums=(0,))
  pick = lambda tree, i: jax.tree.map(lambda x: x[i], tree)

  metric = config.early_stopping.metric
  early = [EarlyStopping(metric, METRIC_MODES[metric], int(config.early_stopping.patience),
                         float(config.early_stopping.get("min_delta", 0.0))) for _ in seeds]
  stopped_at = [None] * len(seeds)
  data_at_stop: list[dict | None] = [None] * len(seeds)
  evals: list[list] = [[] for _ in seeds]
  writers = [MetricsWriter(w, resume_step=None) for w in workdirs] if workdirs else []
  since_log: list[list] = [[] for _ in seeds]  # per seed: per-step metrics since its last log
  total, every = int(config.num_train_steps), int(config.eval_every_steps)
  log_every = int(config.log_every_steps)
  per_dispatch = steps_per_dispatch(config, mesh.devices.flat[0].platform)
  step = 0
  while step < total and any(s is None for s in stopped_at):
    n = min(per_dispatch, (step // every + 1) * every - step,
            (step // log_every + 1) * log_every - step, total - step)
    active = [s is None for s in stopped_at]
    rows, mask = _stack_rows(batchers, n)
    state, metrics = run(state, jnp.asarray(active), rows, mask)
    step += n
    host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}  # each [n, S]
    for i, seed in enumerate(seeds):
      if not active[i]:
        continue
      bad = np.flatnonzero(host["finite"][:, i] < 1.0)
      if bad.size:
        raise FloatingPointError(f"non-finite loss or gradient for seed {seed} at step "
                                 f"{step - n + int(bad[0]) + 1}; stopping")
      since_log[i] += [{k: float(v[j, i]) for k, v in host.items()} for j in range(n)]
    evaluate_now = step % every == 0 or step == total
    for i in range(len(seeds)):
      if writers and active[i] and (step % log_every == 0 or evaluate_now):
        records = since_log[i]
        writers[i].write("train", step, {k: float(np.mean([r[k] for r in records]))
                                         for k in records[0]})
        since_log[i] = []
    if not evaluate_now:
      continue
    improved = np.zeros(len(seeds), bool)
    for i in range(len(seeds)):
      if not active[i]:
        continue
      valid = splits["valid"].metrics(pick(state["params"], i), pick(state["model_state"], i))
      improved[i] = early[i].update(valid[metric], step)
      evals[i].append((step, valid))
      if writers:
        writers[i].write("eval", step, {**{f"valid_{k}": v for k, v in valid.items()},
                                        "best_step": early[i].best_step,
                                        f"best_valid_{metric}": early[i].best_value})
      if early[i].stopped:
        stopped_at[i], data_at_stop[i] = step, batchers[i].get_state()
    if improved.any():
      state = keep_best(state, jnp.asarray(improved))

  results = []
  for i, seed in enumerate(seeds):
    out = {"seed": seed, "best_step": early[i].best_step, "steps": stopped_at[i] or step,
           "stopped_early": early[i].stopped, "evals": evals[i], "predictions": {}}
    for name, columns in (("valid", dataset.split("valid")), ("test", dataset.split("test"))):
      logits = splits[name].predictions(pick(state["best_params"], i),
                                        pick(state["best_model_state"], i))
      out["predictions"][name] = logits
      groups = columns[spec.user_field] if spec.user_field else None
      out[name] = classification_metrics(logits, columns[spec.label], groups)
    if workdirs:
      _write_finished_run(workdirs[i], writers[i], out, pick(state, i),
                          {"data": data_at_stop[i] or batchers[i].get_state(),
                           "early_stopping": early[i].to_dict()}, metric)
    results.append(out)
  return results


def _write_finished_run(workdir, writer, out, state, loop_state, metric) -> None:
  """What a finished train_and_evaluate run leaves: its last checkpoint, the final
  metrics record, predictions.npz and, last (it marks the run finished), results.json."""
  checkpointer = ckpt_lib.Checkpointer(workdir)
  checkpointer.save(out["steps"], state, loop_state)
  checkpointer.close()
  np.savez_compressed(workdir / PREDICTIONS_FILE, **out["predictions"])
  writer.write("final", out["steps"], {f"{s}_{k}": v for s in ("valid", "test")
                                       for k, v in out[s].items()})
  results = {"best_step": out["best_step"], "steps": out["steps"],
             "stopped_early": out["stopped_early"], "checkpoint_step": out["steps"],
             "watched_metric": metric, "valid": out["valid"], "test": out["test"]}
  (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2))

