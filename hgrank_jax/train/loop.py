"""``train_and_evaluate(config, workdir)``: the one training loop.

Restore-or-init from the workdir, then train with a jit-compiled step over a
device mesh, evaluate on validation every ``eval_every_steps``, keep the
best-on-validation weights, stop early when the watched metric stops improving,
checkpoint at every evaluation (and every ``checkpoint_every_steps``), and
finally evaluate the best weights on the test split once. Rerunning the same
command in the same workdir continues from the last checkpoint and ends with the
same numbers as an uninterrupted run; a finished workdir returns its saved
results without training again.

Reliability: SIGTERM or SIGINT finishes the current dispatch of steps, saves a
checkpoint (waiting until it is on disk) and returns ``{"interrupted_at": step}``
(the launcher exits 0); after SIGKILL the next run resumes from the last
complete checkpoint (:mod:`~hgrank_jax.train.preemption`). With
``config.checkpoint_mode`` "async" ("auto" on GPU/TPU) saves are written while
training goes on; a failed one still raises naming its step.
The console (:class:`~hgrank_jax.train.writers.Progress`) gives an ETA to the
step where early stopping would end the run, says when it does, and can label
each line with the run's place in a larger job (``context``).
Data comes from memory (``config.data_source = "memory"``, the default) or is
streamed from array_record blocks (``"streaming"`` with ``config.data_path``).

Host work per step (batching, transfer, dispatch) costs more than a small step
on an accelerator, so each jitted call runs ``config.steps_per_dispatch`` steps
(``lax.scan``; 0 picks 1 on CPU, :data:`ACCELERATOR_STEPS_PER_DISPATCH`
elsewhere) and stops short at every log, evaluation, checkpoint and the end,
so those happen at the same steps whatever the setting. With
``config.data_placement`` "device" (or "auto" on an accelerator, when it fits)
the splits are copied onto the devices once, each dispatch transfers only its
row indices (:mod:`hgrank_jax.data.chunks`), and validation is scored and
measured on the devices in one call (:class:`~hgrank_jax.train.evaluation.DeviceSplit`).
The host reads the step metrics only at logs, evaluations and checkpoints.
In a multi-process run (:mod:`~hgrank_jax.parallel.distributed`) every process
runs this function: each feeds its rows of every global batch, all save the
checkpoint together, and only process 0 writes metrics, results and predictions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hgrank_jax.data import (ArrayBatcher, Dataset, FeatureSpec, chunks, load_dataset, pipeline,
                             registry)
from hgrank_jax.data.formats import block_dataset
from hgrank_jax.train import checkpoint as ckpt_lib
from hgrank_jax.train import preemption
from hgrank_jax.train.early_stopping import EarlyStopping
from hgrank_jax.train.evaluation import (METRIC_MODES, DeviceSplit, classification_metrics,
                                         evaluate_split, predict_split)
from hgrank_jax.parallel.sharding import check_batch_divisible, data_mesh, replicated_sharding
from hgrank_jax.train.objectives import build_objective
from hgrank_jax.train.state import Objective, init_train_state, make_optimizer
from hgrank_jax.train.steps import make_multi_step, make_predict_step, make_train_step
from hgrank_jax.train.writers import MetricsWriter, Progress, RunContext, summary_line

DATA_SOURCES = ("memory", "streaming")
# The host waits for dispatch k - MAX_STEPS_IN_FLIGHT before dispatching more:
# enough to keep the devices busy, and it bounds the queue. With fake CPU devices
# (--xla_force_host_platform_device_count) an unbounded queue of programs with
# cross-device all-reduces deadlocks XLA's CPU thread pool (measured: hundreds of
# queued steps on 8 fake devices and 2 cores abort after a 40 s rendezvous timeout).
MAX_STEPS_IN_FLIGHT = 2
# Steps per jitted call on accelerators when config.steps_per_dispatch is 0: a
# 0.2 ms step (LogLoss, batch 4096 on an H200) then costs one dispatch per 6 ms,
# and chunks stop at every log/eval/checkpoint boundary anyway.
ACCELERATOR_STEPS_PER_DISPATCH = 32
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
  if int(config.get("max_checkpoints", 2)) < 1:
    raise ValueError(f"config.max_checkpoints must be >= 1, got {config.max_checkpoints}")
  if int(config.get("checkpoint_every_steps", 0)) < 0:
    raise ValueError("config.checkpoint_every_steps must be >= 0 (0: only at evaluations), got "
                     f"{config.checkpoint_every_steps}")
  source = config.get("data_source", "memory")
  if source not in DATA_SOURCES:
    raise ValueError(f"config.data_source must be one of {DATA_SOURCES}, got {source!r}")
  if int(config.get("steps_per_dispatch", 0)) < 0:
    raise ValueError("config.steps_per_dispatch must be >= 0 (0: chosen by backend), got "
                     f"{config.steps_per_dispatch}")
  mode = config.get("checkpoint_mode", "auto")
  if mode not in ckpt_lib.CHECKPOINT_MODES:
    raise ValueError(f"config.checkpoint_mode must be one of {ckpt_lib.CHECKPOINT_MODES}, got "
                     f"{mode!r}")
  placement = config.get("data_placement", "auto")
  if placement not in chunks.PLACEMENTS:
    raise ValueError(f"config.data_placement must be one of {chunks.PLACEMENTS}, got "
                     f"{placement!r}")
  if source == "streaming" and placement == "device":
    raise ValueError("config.data_placement='device' needs config.data_source='memory': a "
                     "streamed split is never whole in memory")
  if source == "streaming" and not config.get("data_path"):
    raise ValueError("config.data_source='streaming' needs config.data_path: a block dataset "
                     "directory (blocks.json) or a TFDS data_dir with config.dataset prepared")


def steps_per_dispatch(config: ml_collections.ConfigDict, platform: str) -> int:
  """Train steps per jitted call: ``config.steps_per_dispatch``, or when it is 0, 1 on
  CPU (where a step outweighs its dispatch, and runs stay bit-identical to one
  step per call) and :data:`ACCELERATOR_STEPS_PER_DISPATCH` on GPU/TPU.

  >>> cfg = ml_collections.ConfigDict({"steps_per_dispatch": 0})
  >>> steps_per_dispatch(cfg, "cpu"), steps_per_dispatch(cfg, "gpu")
  (1, 32)
  """
  wanted = int(config.get("steps_per_dispatch", 0))
  if wanted:
    return wanted
  return 1 if platform == "cpu" else ACCELERATOR_STEPS_PER_DISPATCH


def asynchronous_checkpoints(config: ml_collections.ConfigDict, platform: str) -> bool:
  """Whether checkpoints are written in the background: ``config.checkpoint_mode``
  "async", "async_skip" (also skip a periodic save while the previous one is being
  written) or "sync", or "auto" (the default): async on GPU/TPU, where a save
  costs hundreds of steps, and sync on CPU (where runs stay as they were).

  >>> cfg = ml_collections.ConfigDict({"checkpoint_mode": "auto"})
  >>> asynchronous_checkpoints(cfg, "cpu"), asynchronous_checkpoints(cfg, "gpu")
  (False, True)
  """
  mode = config.get("checkpoint_mode", "auto")
  return mode in ("async", "async_skip") or (mode == "auto" and platform != "cpu")


def _select_devices(config):
  devices = jax.devices()
  wanted = int(config.get("num_devices", 0))
  if wanted < 0 or wanted > len(devices):
    raise ValueError(f"config.num_devices={wanted} but {len(devices)} devices are available")
  return devices[:wanted] if wanted else devices


@dataclasses.dataclass
class _Data:
  """What the loop reads: the spec, a resumable train iterator, in-memory eval splits."""
  spec: FeatureSpec
  train: Iterator[dict[str, Any]]  # ArrayBatcher or StreamingBatcher (get_state/set_state)
  example_batch: dict[str, Any]
  valid: Mapping[str, np.ndarray]
  test: Mapping[str, np.ndarray]
  placement: str = "host"  # "device": the train split is resident (train_columns)
  placement_reason: str = "streamed from blocks"
  train_columns: Mapping[str, jax.Array] | None = None


def _open_data(config, dataset: Dataset | None, mesh) -> _Data:
  """Memory: ArrayBatcher over a loaded Dataset. Streaming: StreamingBatcher over blocks.

  Streaming reads ``config.data_path``: a block dataset (``blocks.json``, e.g.
  :func:`hgrank_jax.data.sim.synthetic.write_blocks`) or a TFDS ``data_dir`` where
  ``config.dataset`` (an official dataset) was prepared. Each process reads only
  its blocks of the train split (grain shard by process index); the valid and
  test splits are read whole into memory for exact evaluation.
  """
  seed, batch_size = int(config.seed), int(config.batch_size)
  if config.get("data_source", "memory") == "memory":
    if dataset is None:
      options = {"manual_dir": config.manual_dir} if config.get("manual_dir") else {}
      dataset = load_dataset(config.dataset, seed=int(config.split_seed), **options)
    columns = dataset.split("train")
    train = ArrayBatcher(columns, batch_size, seed=seed, mesh=mesh)
    example = next(ArrayBatcher(columns, batch_size, shuffle=False, mesh=mesh))
    # The valid and test splits go with it: evaluation then runs on the devices too.
    nbytes = sum(chunks.columns_nbytes(dataset.split(s)) for s in ("train", "valid", "test"))
    placement, reason = chunks.choose_placement(config.get("data_placement", "auto"), nbytes,
                                                list(mesh.devices.flat))
    resident = chunks.place_replicated(columns, mesh) if placement == "device" else None
    return _Data(dataset.spec, train, example, dataset.split("valid"), dataset.split("test"),
                 placement, reason, resident)
  path = os.path.expanduser(str(config.data_path))
  window = int(config.get("stream_window_blocks", 8))
  if os.path.exists(os.path.join(path, block_dataset.BLOCKS_METADATA)):
    blocks = block_dataset.open_block_dataset(path)
    spec, source = blocks.spec, blocks.source("train")
    valid, test = blocks.load_split("valid"), blocks.load_split("test")
  else:
    tfds_builders = registry.official_builders()
    name, view = registry.parse_dataset_name(config.dataset)
    if name not in tfds_builders.BUILDERS:
      raise FileNotFoundError(
          f"config.data_path={path} holds no block dataset ({block_dataset.BLOCKS_METADATA} is "
          f"missing) and config.dataset={config.dataset!r} is not an official dataset prepared "
          "with TFDS; write blocks with hgrank_jax.data.sim.synthetic.write_blocks or "
          "hgrank_jax.data.formats.block_dataset.BlockDatasetWriter")
    builder = tfds_builders.open_builder(name, view, data_dir=path)
    spec = tfds_builders.spec_of(builder)
    source = pipeline.BlockSource.from_tfds(builder, "train")
    prepared = tfds_builders.load_prepared(name, view, data_dir=path)
    valid, test = prepared.split("valid"), prepared.split("test")
  train = pipeline.StreamingBatcher(source, batch_size, seed=seed, mesh=mesh, window_blocks=window)
  example = next(pipeline.StreamingBatcher(source, batch_size, shuffle=False, mesh=mesh,
                                           num_epochs=1, window_blocks=window))
  return _Data(spec, train, example, valid, test)


def _any_process(flag: bool) -> bool:
  """True on every process when ``flag`` is True on any (all must stop at the same step)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _per_step(dispatches: list[Mapping[str, Any]]) -> list[dict[str, float]]:
  """Per-dispatch metrics (scalars, or ``[n]`` vectors from a multi-step call) as one
  record per step, in step order."""
  records = []
  for metrics in dispatches:
    columns = {k: np.atleast_1d(np.asarray(v)) for k, v in metrics.items()}
    length = len(next(iter(columns.values())))
    records += [{k: v[i] for k, v in columns.items()} for i in range(length)]
  return records


def _mean_metrics(records: list[Mapping[str, Any]]) -> dict[str, float]:
  keys = records[0].keys()
  return {k: float(np.mean([float(r[k]) for r in records])) for k in keys}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       objective: Objective | None = None, dataset: Dataset | None = None,
                       stop_after_step: int | None = None,
                       context: RunContext | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint) and evaluates.

  Args:
    config: see ``configs/`` (``get_config``); validated before compiling.
      Optional keys read here: ``checkpoint_every_steps`` (0: checkpoint at
      evaluations only), ``max_checkpoints`` (default 2), ``data_source``
      ("memory" or "streaming"), ``data_path``, ``stream_window_blocks``.
    workdir: directory for checkpoints, ``config.json``, ``metrics.jsonl``,
      ``results.json`` and ``predictions.npz`` (best-on-validation logits of the
      valid and test rows, in row order, for analyses such as Table 2).
    objective: overrides the objective built from ``config`` (tests, notebooks).
    dataset: overrides ``load_dataset(config.dataset, seed=config.split_seed)`` (with
      ``manual_dir=config.manual_dir`` for official datasets); memory source only.
    stop_after_step: save a checkpoint after this step and return (a test hook
      that simulates an interruption).
    context: the run's place in a larger job, for the console only: e.g.
      ``RunContext(label="run 3/12", title="LogLoss + ListCE, seed 1",
      job_started_at=t0)`` prints a header line, prefixes every line with
      ``[run 3/12]`` and adds the job's elapsed time (``t0 = time.time()`` when
      the job started).

  Returns:
    ``{"valid": {...}, "test": {...}, "best_step", "steps", "stopped_early"}``
    with the best-on-validation weights' metrics; or ``{"interrupted_at": step}``
    when ``stop_after_step``, SIGTERM or SIGINT stopped the run after saving a
    checkpoint of that step.

  Raises:
    PermissionError: the workdir or its checkpoint directory is not writable
      (before compiling).
    ckpt_lib.CheckpointSaveError: a checkpoint could not be written (e.g. a full
      disk); the message names the step and the last good checkpoint.
    FloatingPointError: a non-finite loss or gradient (the step is named).
  """
  validate_config(config)
  workdir = ckpt_lib.prepare_workdir(workdir, config.to_dict())
  mesh = data_mesh(_select_devices(config))
  check_batch_divisible(config.batch_size, mesh)
  check_batch_divisible(config.eval_batch_size, mesh)
  is_chief = jax.process_index() == 0
  total = int(config.num_train_steps)
  progress = Progress(total, config.batch_size, eval_every_steps=int(config.eval_every_steps),
                      context=context, enabled=is_chief)
  log = progress.log
  progress.header(workdir)

  results_path = workdir / RESULTS_FILE
  mesh_platform = mesh.devices.flat[0].platform
  checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=int(config.get("max_checkpoints", 2)),
                                       asynchronous=asynchronous_checkpoints(config, mesh_platform))
  latest = checkpointer.latest_step()
  if results_path.exists() and latest is not None:
    results = json.loads(results_path.read_text())
    if results.get("checkpoint_step") == latest:
      log(f"{workdir} holds a finished run (step {latest}); returning its results.")
      log(summary_line(results, total))
      checkpointer.close()
      return results

  data = _open_data(config, dataset, mesh)
  if objective is None:
    objective = build_objective(config, data.spec)
  optimizer = make_optimizer(config)
  train_batcher = data.train
  rng = jax.random.PRNGKey(int(config.seed))
  init_fn = lambda key, batch: init_train_state(objective, optimizer, key, batch)
  abstract_state = jax.eval_shape(init_fn, rng, data.example_batch)
  replicated = replicated_sharding(mesh)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)

  early = EarlyStopping(config.early_stopping.metric, METRIC_MODES[config.early_stopping.metric],
                        int(config.early_stopping.patience),
                        float(config.early_stopping.get("min_delta", 0.0)))
  if latest is None:
    state = jax.jit(init_fn, out_shardings=state_sharding)(rng, data.example_batch)
    log(f"Initialised {objective.name}: {_count_params(state['params']):,} parameters on "
        f"{mesh.devices.size} device(s) in {jax.process_count()} process(es).")
  else:
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                          abstract_state)
    state, loop_state = checkpointer.restore(latest, target)
    data_state = dict(loop_state["data"])
    if "process_index" in data_state:
      # Process 0 wrote the JSON; the position (epoch, step) is the same on every
      # process, the shard is each process's own.
      data_state["process_index"] = jax.process_index()
    train_batcher.set_state(data_state)
    early = EarlyStopping.from_dict(loop_state["early_stopping"])
    log(f"Resumed {workdir} from step {latest}.")

  writer = MetricsWriter(workdir, resume_step=latest, enabled=is_chief)
  train_step = make_train_step(objective, optimizer, mesh, state_sharding)
  resident = data.placement == "device"
  multi_step = make_multi_step(objective, optimizer, mesh, state_sharding,
                               device_columns=resident)
  predict = make_predict_step(objective, mesh)
  on_device = {s: DeviceSplit(objective.predict, columns, data.spec, int(config.eval_batch_size),
                              mesh) for s, columns in (("valid", data.valid), ("test", data.test))
               } if resident else {}
  checkpoint_every = int(config.get("checkpoint_every_steps", 0))
  per_dispatch = steps_per_dispatch(config, mesh_platform)
  log(f"Data: {data.placement} ({data.placement_reason}); {per_dispatch} step(s) per dispatch; "
      f"{'asynchronous' if checkpointer.asynchronous else 'synchronous'} checkpoints.")
  step = int(jax.device_get(state["step"]))
  progress.start(step)
  pending: list[dict[str, Any]] = []  # one metrics dict per dispatch, still on the device
  last_saved = latest

  def next_boundary(current):
    """The first step after ``current`` where the host must look: log, eval, save or end."""
    every = [int(config.log_every_steps), int(config.eval_every_steps)]
    every += [checkpoint_every] if checkpoint_every else []
    candidates = [total] + [(current // e + 1) * e for e in every]
    if stop_after_step is not None and stop_after_step > current:
      candidates.append(int(stop_after_step))
    return min(candidates)

  def dispatch(state, n):
    """Runs ``n`` steps in one call; the one-step form is the plain jitted step."""
    if resident:
      rows, mask = chunks.next_rows(train_batcher, n, mesh)
      return multi_step(state, data.train_columns, rows, mask)
    if n == 1:
      return train_step(state, next(train_batcher))
    return multi_step(state, chunks.stacked_batches(train_batcher, n, mesh,
                                                    int(config.batch_size)))

  def loop_state():
    return {"data": train_batcher.get_state(), "early_stopping": early.to_dict()}

  skip_if_busy = config.get("checkpoint_mode", "auto") == "async_skip"
  skipped = []

  def save(periodic=False):
    nonlocal last_saved
    check_finite()
    try:
      saved = checkpointer.save(step, state, loop_state(), skip_if_busy=periodic and skip_if_busy)
    except ckpt_lib.CheckpointSaveError:
      checkpointer.close(wait=False)
      raise
    if saved:
      last_saved = step
    else:
      skipped.append(step)

  def check_finite(host=None):
    """Raises at the first step since the last flush whose loss or gradient was not finite
    (before a save, so a checkpoint never holds the state after such a step)."""
    if host is None:
      host = _per_step(jax.device_get([{"finite": m["finite"], "loss": m["loss"]}
                                       for m in pending]))
    for offset, record in enumerate(host):
      if record["finite"] < 1.0:
        bad_step = step - len(host) + offset + 1
        checkpointer.close()
        raise FloatingPointError(
            f"non-finite loss or gradient at step {bad_step} (loss={record['loss']}); stopping. "
            f"The last good checkpoint is step {last_saved} in {workdir}.")

  def flush_train_metrics():
    host = _per_step(jax.device_get(pending))
    check_finite(host)
    summary = _mean_metrics(host)
    writer.write("train", step, summary)
    progress.report(step, summary["loss"], early)
    pending.clear()

  with preemption.PreemptionGuard() as guard:
    while step < total and not early.stopped:
      n = min(per_dispatch, next_boundary(step) - step)
      state, step_metrics = dispatch(state, n)
      step += n
      pending.append(step_metrics)
      if len(pending) > MAX_STEPS_IN_FLIGHT:
        jax.block_until_ready(pending[-1 - MAX_STEPS_IN_FLIGHT])
      for done in range(step - n + 1, step + 1):
        preemption.maybe_self_signal(done)  # a test hook; a no-op unless $HGRANK_SELF_SIGNAL
      preempted = _any_process(guard.requested is not None)
      stop_here = preempted or step == stop_after_step
      evaluate_now = step % config.eval_every_steps == 0 or step == total
      if step % config.log_every_steps == 0 or evaluate_now or stop_here:
        flush_train_metrics()
      if evaluate_now:
        if resident:
          valid = on_device["valid"].metrics(state["params"], state["model_state"])
        else:
          valid = evaluate_split(predict, state["params"], state["model_state"], data.valid,
                                 data.spec, config.eval_batch_size, mesh)
        if early.update(valid[early.metric], step):
          state["best_params"] = jax.tree.map(jnp.copy, state["params"])
          state["best_model_state"] = jax.tree.map(jnp.copy, state["model_state"])
        writer.write("eval", step, {**{f"valid_{k}": v for k, v in valid.items()},
                                    "best_step": early.best_step,
                                    f"best_valid_{early.metric}": early.best_value})
        progress.evaluated(step, valid, early)
        save(periodic=not stop_here)
        if early.stopped:
          progress.stopped_early(step, early)
        progress.resume_timing(step)
      elif checkpoint_every and step % checkpoint_every == 0:
        save(periodic=not stop_here)
      if stop_here:
        if last_saved != step:
          save()
        checkpointer.close()
        if preempted and (is_chief or guard.requested):
          # Every process that caught the signal says so, not only process 0.
          message = (f"Interrupted by {guard.requested or 'another process'} at step {step}: "
                     f"saved a checkpoint in {workdir}. Rerun the same command to resume.")
          if is_chief:
            log(message)
          else:
            print(message, flush=True)
        return {"interrupted_at": step}

    if last_saved != step:
      save()
    results = {"best_step": early.best_step, "steps": step, "stopped_early": early.stopped,
               "checkpoint_step": step, "watched_metric": early.metric}
    predictions = {}
    for split, columns in (("valid", data.valid), ("test", data.test)):
      if resident:
        predictions[split] = on_device[split].predictions(state["best_params"],
                                                          state["best_model_state"])
      else:
        predictions[split] = predict_split(predict, state["best_params"],
                                           state["best_model_state"], columns,
                                           config.eval_batch_size, mesh)
      # The reported numbers are those of the saved predictions, in float64.
      groups = columns[data.spec.user_field] if data.spec.user_field else None
      results[split] = classification_metrics(predictions[split], columns[data.spec.label],
                                              groups)
    if is_chief:
      np.savez_compressed(workdir / PREDICTIONS_FILE, **predictions)
    writer.write("final", step, {f"{s}_{k}": v for s in ("valid", "test")
                                 for k, v in results[s].items()})
    checkpointer.wait()  # results.json marks a finished run: only after its checkpoint is whole
    if skipped:
      log(f"Skipped {len(skipped)} periodic checkpoint(s) while the previous one was being "
          f"written (checkpoint_mode='async_skip'), e.g. at step {skipped[0]}.")
    if is_chief:
      results_path.write_text(json.dumps(results, indent=2))
    checkpointer.close()
    progress.finished(results)
    return results


def _count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
