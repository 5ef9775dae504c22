r"""Trainer overhead: examples/s of ``train_and_evaluate`` against the bare jitted train step.

  python benchmarks/trainer_overhead.py                      # defaults sized for the backend
  python benchmarks/trainer_overhead.py --host-baseline      # also one host-fed step per call
  python benchmarks/trainer_overhead.py --table1             # also Table 1 quick end to end (slow)

On the bundled KuaiRand subset with ``configs/kuairand_sig.py:logloss`` (batch
4096) and one device, measures:

* ``bare``: the jitted train step alone, called back to back on one placed batch
  (the fastest of 3 runs of ``--bare-steps`` calls), the reference of the ratios;
  and, for scale, the same steps ``k`` per call scanned over the resident split
  (on a GPU the bare step is itself bound by its dispatch);
* ``trainer, shipped cadence``: ``train_and_evaluate`` as configured (evaluation,
  logging and a checkpoint every 43 steps, about one epoch), over every window
  between train records after the first two (compilation and the first save);
* ``trainer, between evaluations``: evaluation every 1000 steps and logging every
  ``--rare-log`` steps, over the windows between train records that hold no
  evaluation or checkpoint;

each as examples/s and as its ratio to ``bare``. The trainer runs with the
config's execution defaults (``steps_per_dispatch`` and ``data_placement``
chosen by backend) unless ``--steps-per-dispatch``/``--placement`` say
otherwise; ``--host-baseline`` adds the two trainer rows with one host-fed step
per call (the CPU defaults; the trainer before several steps per dispatch).
``--checkpoint-mode async_skip`` shows the shipped cadence when a save every 43
steps is skipped while the previous one is still being written.
Windows are timed from the ``time`` of the train records in ``metrics.jsonl``,
which the loop writes after reading the steps' metrics back from the device.
``--table1`` adds the wall time of ``python -m launch.reproduce --config
configs/table1.py:kuairand_sig,quick`` (about 7 minutes on 2 CPU cores).

Defaults: 3000 steps between evaluations and 1290 (30 epochs) at the shipped
cadence on an accelerator (about a minute on a GPU, compilation included);
400 and 215 on CPU. Every row is labelled with the device kind and the jax
version. Prints a table and one JSON line prefixed ``BENCHMARK_JSON``.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bare_examples_per_s(config, dataset, steps: int, k: int) -> tuple[float, float]:
  """Examples/s of the bare jitted step on one placed batch, and of ``k`` such steps per
  call scanned over the resident split (each the fastest of 3 runs)."""
  import jax  # pylint: disable=g-import-not-at-top

  from hgrank_jax.data import ArrayBatcher, chunks
  from hgrank_jax.train.objectives import build_objective
  from hgrank_jax.parallel.sharding import data_mesh, replicated_sharding
  from hgrank_jax.train.state import init_train_state, make_optimizer
  from hgrank_jax.train.steps import make_multi_step, make_train_step

  mesh = data_mesh(jax.devices()[:1])
  batch = next(ArrayBatcher(dataset.split("train"), int(config.batch_size), seed=0, mesh=mesh))
  objective = build_objective(config, dataset.spec)
  optimizer = make_optimizer(config)
  init = lambda key, b: init_train_state(objective, optimizer, key, b)
  sharding = jax.tree.map(lambda _: replicated_sharding(mesh),
                          jax.eval_shape(init, jax.random.PRNGKey(0), batch))
  state = jax.jit(init, out_shardings=sharding)(jax.random.PRNGKey(0), batch)
  step = make_train_step(objective, optimizer, mesh, sharding)
  multi = make_multi_step(objective, optimizer, mesh, sharding, device_columns=True)
  resident = chunks.place_replicated(dataset.split("train"), mesh)
  rows, mask = chunks.next_rows(ArrayBatcher(dataset.split("train"), int(config.batch_size),
                                             seed=0, mesh=mesh), k, mesh)
  rates = []
  for call, steps_per_call, args in ((step, 1, (batch,)), (multi, k, (resident, rows, mask))):
    state, metrics = call(state, *args)
    jax.block_until_ready(metrics)
    calls = max(steps // steps_per_call, 1)
    best = float("inf")
    for _ in range(3):
      start = time.perf_counter()
      for _ in range(calls):
        state, metrics = call(state, *args)
      jax.block_until_ready((state, metrics))
      best = min(best, (time.perf_counter() - start) / (calls * steps_per_call))
    rates.append(int(config.batch_size) / best)
  return rates[0], rates[1]


def _trainer_examples_per_s(config, dataset, workdir, *, skip_windows: int,
                            between_evaluations: bool) -> dict:
  """Examples/s over the chosen windows, run wall seconds, steps timed, the mean seconds
  of an evaluation (its train record to its eval record) and the run's results."""
  from hgrank_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.writers import read_metrics  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  results = train_and_evaluate(config, workdir, dataset=dataset)
  wall = time.perf_counter() - start
  records = read_metrics(workdir, "train")
  evals = {r["step"]: r["time"] for r in read_metrics(workdir, "eval")}
  evaluated = set(evals)
  eval_seconds = [evals[r["step"]] - r["time"] for r in records[skip_windows:]
                  if r["step"] in evals]
  checkpoint_every = int(config.get("checkpoint_every_steps", 0))
  steps = seconds = 0.0
  for index, (a, b) in enumerate(zip(records, records[1:])):
    if index < skip_windows:
      continue
    saved = checkpoint_every and any(s % checkpoint_every == 0 for s in range(a["step"],
                                                                             b["step"]))
    if between_evaluations and (a["step"] in evaluated or saved):
      continue  # the evaluation and the checkpoint of step a happen after its record
    steps += b["step"] - a["step"]
    seconds += b["time"] - a["time"]
  if not steps:
    raise ValueError(f"no window to time in {workdir}: run more steps (--steps)")
  return {"examples_per_s": steps * int(config.batch_size) / seconds, "wall_s": wall,
          "timed_steps": int(steps), "results": results,
          "eval_s": sum(eval_seconds) / len(eval_seconds) if eval_seconds else None}


def _table1_quick_seconds(workdir: str) -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "launch.reproduce",
                  "--config=configs/table1.py:kuairand_sig,quick",
                  f"--workdir={workdir}"], cwd=ROOT, check=True,
                 capture_output=True, text=True)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=0,
                      help="steps of the between-evaluations run (0: 3000 on an accelerator, "
                      "400 on CPU)")
  parser.add_argument("--shipped-steps", type=int, default=0,
                      help="steps of the shipped-cadence run (0: 1290 on an accelerator, 215 "
                      "on CPU)")
  parser.add_argument("--rare-log", type=int, default=0,
                      help="log every this many steps between evaluations (0: 500 on an "
                      "accelerator, 100 on CPU)")
  parser.add_argument("--bare-steps", type=int, default=0,
                      help="timed bare steps per run (0: 500 on an accelerator, 30 on CPU)")
  parser.add_argument("--steps-per-dispatch", type=int, default=-1,
                      help="config.steps_per_dispatch for the trainer (-1: the config's)")
  parser.add_argument("--placement", default="",
                      help="config.data_placement for the trainer ('': the config's)")
  parser.add_argument("--checkpoint-mode", default="",
                      help="config.checkpoint_mode for the trainer ('': the config's)")
  parser.add_argument("--host-baseline", action="store_true",
                      help="also time the trainer with one host-fed step per call")
  parser.add_argument("--table1", action="store_true",
                      help="also time Table 1 quick end to end (slow on CPU)")
  parser.add_argument("--workdir", default="", help="scratch directory (default: a temporary one)")
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top

  from configs import kuairand_sig  # pylint: disable=g-import-not-at-top
  from hgrank_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  from hgrank_jax.parallel import enable_compilation_cache  # pylint: disable=g-import-not-at-top

  enable_compilation_cache()
  device = jax.devices()[0]
  accelerator = device.platform != "cpu"
  steps = args.steps or (3000 if accelerator else 400)
  shipped_steps = args.shipped_steps or (1290 if accelerator else 215)
  rare_log = args.rare_log or (500 if accelerator else 100)
  bare_steps = args.bare_steps or (500 if accelerator else 30)
  label = {"device_kind": device.device_kind, "platform": device.platform,
           "jax": jax.__version__}
  dataset = load_dataset("kuairand_sig:paper")
  scratch = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="trainer_overhead_"))

  def config_for(cadence, execution):
    config = kuairand_sig.get_config("logloss")
    config.num_devices = 1
    config.early_stopping.patience = 0  # never stop early: every run times its full length
    if cadence == "shipped":
      config.num_train_steps = shipped_steps
    else:
      config.num_train_steps = steps
      config.eval_every_steps = 1000
      config.log_every_steps = rare_log
    if execution == "host, 1 step/call":
      config.steps_per_dispatch, config.data_placement, config.checkpoint_mode = 1, "host", "sync"
    else:
      if args.steps_per_dispatch >= 0:
        config.steps_per_dispatch = args.steps_per_dispatch
      if args.placement:
        config.data_placement = args.placement
      if args.checkpoint_mode:
        config.checkpoint_mode = args.checkpoint_mode
    return config

  from hgrank_jax.train.loop import steps_per_dispatch  # pylint: disable=g-import-not-at-top
  k = steps_per_dispatch(config_for("shipped", "default"), device.platform)
  bare, bare_scan = _bare_examples_per_s(config_for("shipped", "default"), dataset, bare_steps,
                                         max(k, 2))
  rows = [{"row": "bare jitted step", "examples_per_s": bare, "ratio": 1.0, **label},
          {"row": f"bare {max(k, 2)} steps per call (scan, resident data)",
           "examples_per_s": bare_scan, "ratio": bare_scan / bare, **label}]
  executions = ["default"] + (["host, 1 step/call"] if args.host_baseline else [])
  results = {}
  for execution in executions:
    for cadence in ("between", "shipped"):
      config = config_for(cadence, execution)
      workdir = scratch / f"{cadence}_{execution.replace(', ', '_').replace(' ', '').replace('/', '')}"
      run = _trainer_examples_per_s(
          config, dataset, workdir, skip_windows=2 if cadence == "shipped" else 0,
          between_evaluations=cadence == "between")
      results[(execution, cadence)] = run.pop("results")
      name = ("trainer, between evaluations" if cadence == "between"
              else "trainer, shipped cadence (eval+ckpt every 43)")
      rows.append({"row": f"{name} [{execution}]", **run, "ratio": run["examples_per_s"] / bare,
                   "steps": int(config.num_train_steps),
                   "steps_per_dispatch": steps_per_dispatch(config, device.platform),
                   "data_placement": str(config.data_placement),
                   "checkpoint_mode": str(config.checkpoint_mode), **label})
  table1 = None
  if args.table1:
    table1 = _table1_quick_seconds(str(scratch / "table1_results"))

  print(f"{label['device_kind']} ({label['platform']}), jax {label['jax']}; "
        "configs/kuairand_sig.py:logloss, batch 4096, one device")
  print("| row | examples/s | trainer / bare | steps (timed) | wall s | steps/dispatch (data, "
        "checkpoints) |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    extra = (f"{r['steps']} ({r['timed_steps']}) | {r['wall_s']:.1f} | "
             f"{r['steps_per_dispatch']} ({r['data_placement']}, {r['checkpoint_mode']})"
             ) if "steps" in r else "| |"
    print(f"| {r['row']} | {r['examples_per_s']:,.0f} | {r['ratio']:.2f} | {extra} |")
  # The same run fed two ways should end alike (the default within float noise).
  differences = {}
  if args.host_baseline:
    for cadence in ("between", "shipped"):
      a, b = results[("default", cadence)], results[("host, 1 step/call", cadence)]
      differences[cadence] = {"best_step": [a["best_step"], b["best_step"]], **{
          f"test_{k}": abs(a["test"][k] - b["test"][k]) for k in ("logloss", "auc", "gauc")}}
      print(f"{cadence}: default vs host-fed one step per call: {differences[cadence]}")
  evals = [f"{r['row']}: {1e3 * r['eval_s']:.1f} ms" for r in rows if r.get("eval_s")]
  if evals:
    print("mean evaluation time (train record to eval record): " + "; ".join(evals))
  if table1 is not None:
    print(f"Table 1 quick (launch.reproduce configs/table1.py:kuairand_sig,quick): {table1:.0f} s")
  print("BENCHMARK_JSON " + json.dumps({"benchmark": "trainer_overhead", **label, "rows": rows,
                                       "table1_quick_s": table1,
                                       "default_vs_host_baseline": differences}))


if __name__ == "__main__":
  main()
