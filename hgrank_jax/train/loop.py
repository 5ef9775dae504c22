"""``train_and_evaluate(config, workdir)``: the one training loop.

Restore-or-init from the workdir, then train with a jit-compiled step over a
device mesh, evaluate on validation every ``eval_every_steps``, keep the
best-on-validation weights, stop early when the watched metric stops improving,
checkpoint at every evaluation, and finally evaluate the best weights on the
test split once. Rerunning the same command in the same workdir continues from
the last checkpoint and ends with the same numbers as an uninterrupted run; a
finished workdir returns its saved results without training again.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hgrank_jax.data import ArrayBatcher, Dataset, load_dataset
from hgrank_jax.train import checkpoint as ckpt_lib
from hgrank_jax.train.early_stopping import EarlyStopping
from hgrank_jax.train.evaluation import (METRIC_MODES, classification_metrics, evaluate_split,
                                         predict_split)
from hgrank_jax.train.sharding import check_batch_divisible, data_mesh, replicated_sharding
from hgrank_jax.train.state import Objective, init_train_state, make_optimizer
from hgrank_jax.train.steps import make_predict_step, make_train_step
from hgrank_jax.train.writers import MetricsWriter, Progress

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.npz"  # best-on-validation logits of the valid and test rows


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks values ml_collections' type locking cannot, before any compilation."""
  positive = ("batch_size", "eval_batch_size", "num_train_steps", "eval_every_steps",
              "log_every_steps")
  for key in positive:
    if int(config[key]) < 1:
      raise ValueError(f"config.{key} must be >= 1, got {config[key]}")
  if config.learning_rate <= 0:
    raise ValueError(f"config.learning_rate must be > 0, got {config.learning_rate}")
  metric = config.early_stopping.metric
  if metric not in METRIC_MODES:
    raise ValueError(f"config.early_stopping.metric must be one of {sorted(METRIC_MODES)}, "
                     f"got {metric!r}")


def _select_devices(config):
  devices = jax.devices()
  wanted = int(config.get("num_devices", 0))
  if wanted < 0 or wanted > len(devices):
    raise ValueError(f"config.num_devices={wanted} but {len(devices)} devices are available")
  return devices[:wanted] if wanted else devices


def _mean_metrics(records: list[Mapping[str, Any]]) -> dict[str, float]:
  keys = records[0].keys()
  return {k: float(np.mean([float(r[k]) for r in records])) for k in keys}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       objective: Objective | None = None, dataset: Dataset | None = None,
                       stop_after_step: int | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint) and evaluates.

  Args:
    config: see ``configs/`` (``get_config``); validated before compiling.
    workdir: directory for checkpoints, ``config.json``, ``metrics.jsonl``,
      ``results.json`` and ``predictions.npz`` (best-on-validation logits of the
      valid and test rows, in row order, for analyses such as Table 2).
    objective: overrides the objective built from ``config`` (tests, notebooks).
    dataset: overrides ``load_dataset(config.dataset, seed=config.split_seed)`` (with
      ``manual_dir=config.manual_dir`` for official datasets).
    stop_after_step: save a checkpoint after this step and return (a test hook
      that simulates an interruption).

  Returns:
    ``{"valid": {...}, "test": {...}, "best_step", "steps", "stopped_early"}``
    with the best-on-validation weights' metrics; or ``{"interrupted_at": step}``
    when ``stop_after_step`` stopped the run.
  """
  validate_config(config)
  workdir = ckpt_lib.prepare_workdir(workdir, config.to_dict())
  mesh = data_mesh(_select_devices(config))
  check_batch_divisible(config.batch_size, mesh)
  check_batch_divisible(config.eval_batch_size, mesh)
  is_chief = jax.process_index() == 0

  results_path = workdir / RESULTS_FILE
  checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=int(config.get("max_checkpoints", 2)))
  latest = checkpointer.latest_step()
  if results_path.exists() and latest is not None:
    results = json.loads(results_path.read_text())
    if results.get("checkpoint_step") == latest:
      print(f"{workdir} holds a finished run (step {latest}); returning its results.")
      checkpointer.close()
      return results

  if dataset is None:
    options = {"manual_dir": config.manual_dir} if config.get("manual_dir") else {}
    dataset = load_dataset(config.dataset, seed=int(config.split_seed), **options)
  if objective is None:
    from hgrank_jax.train.objectives import build_objective  # pylint: disable=g-import-not-at-top
    objective = build_objective(config, dataset.spec)
  optimizer = make_optimizer(config)
  train_batcher = ArrayBatcher(dataset.split("train"), config.batch_size, seed=int(config.seed),
                               mesh=mesh)
  example_batch = next(ArrayBatcher(dataset.split("train"), config.batch_size, shuffle=False,
                                    mesh=mesh))
  rng = jax.random.PRNGKey(int(config.seed))
  init_fn = lambda key, batch: init_train_state(objective, optimizer, key, batch)
  abstract_state = jax.eval_shape(init_fn, rng, example_batch)
  replicated = replicated_sharding(mesh)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)

  early = EarlyStopping(config.early_stopping.metric, METRIC_MODES[config.early_stopping.metric],
                        int(config.early_stopping.patience),
                        float(config.early_stopping.get("min_delta", 0.0)))
  if latest is None:
    state = jax.jit(init_fn, out_shardings=state_sharding)(rng, example_batch)
    print(f"Initialised {objective.name}: {_count_params(state['params']):,} parameters on "
          f"{mesh.devices.size} device(s).")
  else:
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                          abstract_state)
    state, loop_state = checkpointer.restore(latest, target)
    train_batcher.set_state(loop_state["data"])
    early = EarlyStopping.from_dict(loop_state["early_stopping"])
    print(f"Resumed {workdir} from step {latest}.")

  writer = MetricsWriter(workdir, resume_step=latest, enabled=is_chief)
  train_step = make_train_step(objective, optimizer, mesh, state_sharding)
  predict = make_predict_step(objective, mesh)
  total = int(config.num_train_steps)
  step = int(jax.device_get(state["step"]))
  progress = Progress(total, config.batch_size, start_step=step)
  pending: list[dict[str, Any]] = []
  last_saved = latest

  def loop_state():
    return {"data": train_batcher.get_state(), "early_stopping": early.to_dict()}

  def save():
    nonlocal last_saved
    checkpointer.save(step, state, loop_state())
    last_saved = step

  def flush_train_metrics():
    host = jax.device_get(pending)
    for offset, record in enumerate(host):
      if record["finite"] < 1.0:
        bad_step = step - len(host) + offset + 1
        checkpointer.close()
        raise FloatingPointError(
            f"non-finite loss or gradient at step {bad_step} (loss={record['loss']}); stopping. "
            f"The last good checkpoint is step {last_saved} in {workdir}.")
    summary = _mean_metrics(host)
    writer.write("train", step, summary)
    progress.report(step, summary["loss"])
    pending.clear()

  while step < total and not early.stopped:
    state, step_metrics = train_step(state, next(train_batcher))
    step += 1
    pending.append(step_metrics)
    evaluate_now = step % config.eval_every_steps == 0 or step == total
    if step % config.log_every_steps == 0 or evaluate_now or step == stop_after_step:
      flush_train_metrics()
    if evaluate_now:
      valid = evaluate_split(predict, state["params"], state["model_state"],
                             dataset.split("valid"), dataset.spec, config.eval_batch_size, mesh)
      if early.update(valid[early.metric], step):
        state["best_params"] = jax.tree.map(jnp.copy, state["params"])
        state["best_model_state"] = jax.tree.map(jnp.copy, state["model_state"])
      writer.write("eval", step, {**{f"valid_{k}": v for k, v in valid.items()},
                                  "best_step": early.best_step,
                                  f"best_valid_{early.metric}": early.best_value})
      print(f"  eval step {step}: " + "  ".join(f"{k} {v:.5f}" for k, v in valid.items()
                                                if isinstance(v, float))
            + f"  (best {early.metric} {early.best_value} at step {early.best_step})")
      save()
    if stop_after_step is not None and step == stop_after_step:
      if last_saved != step:
        save()
      checkpointer.close()
      return {"interrupted_at": step}

  if last_saved != step:
    save()
  results = {"best_step": early.best_step, "steps": step, "stopped_early": early.stopped,
             "checkpoint_step": step, "watched_metric": early.metric}
  predictions = {}
  for split in ("valid", "test"):
    columns = dataset.split(split)
    predictions[split] = predict_split(predict, state["best_params"], state["best_model_state"],
                                       columns, config.eval_batch_size, mesh)
    groups = columns[dataset.spec.user_field] if dataset.spec.user_field else None
    results[split] = classification_metrics(predictions[split], columns[dataset.spec.label], groups)
  if is_chief:
    np.savez_compressed(workdir / PREDICTIONS_FILE, **predictions)
  writer.write("final", step, {f"{s}_{k}": v for s in ("valid", "test")
                               for k, v in results[s].items()})
  if is_chief:
    results_path.write_text(json.dumps(results, indent=2))
  checkpointer.close()
  print(f"Best step {early.best_step}: test " + "  ".join(
      f"{k} {v:.5f}" for k, v in results["test"].items() if isinstance(v, float)))
  return results


def _count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
