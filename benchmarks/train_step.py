r"""Train-step throughput: LogLoss-only vs GroupCE (the paper's model) on the same scorer.

  python benchmarks/train_step.py [--batch 4096] [--devices 1] [--steps 20] [--rounds 5]

Times jitted train steps (forward, backward, AdamW update) on the bundled
KuaiRand subset, on whatever backend JAX picks (a GPU or TPU when there is one).
The headline figure is the GroupCE / LogLoss ratio measured *interleaved in one
process*: ``--rounds`` rounds, each timing ``--steps`` LogLoss steps and then
``--steps`` GroupCE steps, and the ratio of the fastest GroupCE round to the
fastest LogLoss round. Contention on a shared machine then hits both objectives
alike; the load average before and after is recorded with each row, and on a
CPU backend the same ratio of process CPU time, which load disturbs less.

The GroupCE step is broken down into its parts timed on their own: the
quantizer (ResidualVQ with its EMA update), the auxiliary pass (the main
network on the quantized user vector, forward and backward to that vector
only; the step itself runs it batched with the primary pass) and the grouped
ListCE (Eq. 9) forward and backward on fixed logits and codes. Each part is the
fastest of --rounds runs of --steps calls.

Each device count runs in its own worker process. A count of 1 uses the default
backend as it is; larger counts are fake CPU devices
(``--xla_force_host_platform_device_count``, with ``JAX_PLATFORMS=cpu``), which
measure sharding overhead, not speed. Rows name the device kind and the JAX
version. Prints a table and one JSON line prefixed BENCHMARK_JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _run(fn, args, steps, cpu_times=None):
  """Seconds per call of ``steps`` back-to-back calls (after they all finish).

  ``cpu_times``, when given, receives this process's CPU seconds per call: on a
  CPU backend that is the work done, which other processes' load disturbs less
  than the wall clock (XLA's threads wait for cores instead of running).
  """
  import jax  # pylint: disable=g-import-not-at-top
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    out = fn(*args)
  jax.block_until_ready(out)
  if cpu_times is not None:
    cpu_times.append((time.process_time() - start_cpu) / steps)
  return (time.perf_counter() - start) / steps


def _best(fn, *args, steps, rounds):
  """Seconds per call: the fastest of ``rounds`` runs of ``steps`` calls.

  One untimed call first leaves compilation out; the fastest run stays close to
  the uncontended cost on a shared machine.
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  return min(_run(fn, args, steps) for _ in range(rounds))


def measure(batch_size: int, steps: int, rounds: int, batched_aux: str) -> dict:
  import jax
  import jax.numpy as jnp
  import optax  # pylint: disable=unused-import

  from hgrank_jax import losses
  from hgrank_jax.data import ArrayBatcher, load_dataset
  from hgrank_jax.models import RVQ_COLLECTION, ResidualVQ
  from hgrank_jax.train.objectives import build_objective, hgr_model_from_config
  from hgrank_jax.parallel.sharding import batch_sharding, data_mesh
  from hgrank_jax.train.state import init_replicated_train_state, make_optimizer
  from hgrank_jax.train.steps import make_train_step

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from configs import common  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()[0]
  device = jax.devices()[0]
  dataset = load_dataset("kuairand_sig:paper")
  mesh = data_mesh()
  batch = next(ArrayBatcher(dataset.split("train"), batch_size, seed=0, mesh=mesh))
  out = {"devices": jax.device_count(), "platform": device.platform,
         "device_kind": device.device_kind, "jax": jax.__version__, "batch": batch_size,
         "steps": steps, "rounds": rounds, "batched_aux": batched_aux}
  step_fns = {}
  for variant in ("logloss", "groupce"):
    config = common.apply_variants(common.base_config(), variant)
    config.learning_rate = 1e-3
    if variant == "groupce" and batched_aux != "auto":
      config.hgr.batched_aux = batched_aux == "on"
    objective = build_objective(config, dataset.spec)
    optimizer = make_optimizer(config)
    state, sharding = init_replicated_train_state(objective, optimizer, mesh,
                                                  jax.random.PRNGKey(0), batch)
    step = make_train_step(objective, optimizer, mesh, sharding)
    state, _ = step(state, batch)  # compile; GroupCE's k-means initialisation runs here
    holder = {"state": state}

    def one_step(batch, holder=holder, step=step):
      holder["state"], metrics = step(holder["state"], batch)  # the state is donated
      return metrics

    jax.block_until_ready(one_step(batch))
    step_fns[variant] = one_step
    if variant == "groupce":
      groupce_state = holder

  # Interleaved rounds: both objectives see the same contention.
  times = {"logloss": [], "groupce": []}
  cpu_times = {"logloss": [], "groupce": []}
  for _ in range(rounds):
    for variant, fn in step_fns.items():
      times[variant].append(_run(fn, (batch,), steps, cpu_times[variant]))
  out["logloss_step_s"] = min(times["logloss"])
  out["groupce_step_s"] = min(times["groupce"])
  out["ratio_groupce_to_logloss"] = out["groupce_step_s"] / out["logloss_step_s"]
  out["round_ratios"] = [g / l for g, l in zip(times["groupce"], times["logloss"])]
  # Process CPU seconds: meaningful on a CPU backend only (a GPU host thread waits).
  out["cpu_ratio_groupce_to_logloss"] = min(cpu_times["groupce"]) / min(cpu_times["logloss"])

  # Parts of the GroupCE step, each jitted on its own.
  config = common.apply_variants(common.base_config(), "groupce")
  hgr_model = hgr_model_from_config(config, dataset.spec)
  params = groupce_state["state"]["params"]
  user_embedding, item_embedding, context = hgr_model.apply(
      {"params": params}, batch, method=lambda m, b: m.scorer.encode(b, train=False))
  rvq = ResidualVQ(num_levels=config.hgr.num_levels, codebook_size=config.hgr.codebook_size)
  variables = rvq.init(jax.random.PRNGKey(0), user_embedding)
  quantize = jax.jit(lambda v, x: rvq.apply(v, x, update=True, mutable=[RVQ_COLLECTION]))
  _, updated = quantize(variables, user_embedding)  # leave the k-means initialisation behind
  variables = {**variables, **updated}
  out["quantizer_s"] = _best(quantize, variables, user_embedding, steps=steps, rounds=rounds)

  # The auxiliary pass on its own: the main network on (e_u^q, e_i) forward, and
  # backward to e_u^q only (its parameters are frozen on this path).
  def aux_pass(params, user, item, context):
    logits = hgr_model.apply({"params": jax.lax.stop_gradient(params)}, user, item, context,
                             method=lambda m, u, i, c: m.scorer.main(u, i, c, train=True))
    return jnp.sum(logits)
  aux_grad = jax.jit(jax.grad(aux_pass, argnums=1))
  out["aux_pass_s"] = _best(aux_grad, params, user_embedding, item_embedding, context,
                            steps=steps, rounds=rounds)

  logits = jax.random.normal(jax.random.PRNGKey(2), (batch_size,))
  labels = batch["label"]
  codes = jax.random.randint(jax.random.PRNGKey(3), (batch_size, config.hgr.num_levels), 0,
                             config.hgr.codebook_size)
  log_sigma = jnp.zeros(config.hgr.num_levels)
  # Labels and codes are arguments, not closed-over constants, so XLA cannot
  # precompute the grouping at compile time. The codebook size is passed as in
  # the train step, which lets the grouping count rows instead of sorting.
  codebook_size = int(config.hgr.codebook_size)
  group_ce_grad = jax.jit(jax.value_and_grad(
      lambda s, y, c, ls: losses.group_ce(s, y, codes=c, log_sigma=ls,
                                          codebook_size=codebook_size)))
  data = batch_sharding(mesh)
  logits, codes = jax.device_put(logits, data), jax.device_put(codes, data)
  out["group_ce_s"] = _best(group_ce_grad, logits, labels, codes, log_sigma, steps=steps,
                            rounds=rounds)
  out["load_average"] = [load_before, os.getloadavg()[0]]
  return out


def _label(row) -> str:
  if row["platform"] == "cpu" and row["devices"] > 1:
    return f"cpu x{row['devices']} (fake)"
  return f"{row['device_kind']} x{row['devices']}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--devices", default="1",
                      help="comma-separated device counts; counts > 1 are fake CPU devices")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--batched_aux", choices=("auto", "on", "off"), default="auto",
                      help="GroupCE's primary and auxiliary passes as one batched pass or two "
                           "(config.hgr.batched_aux; auto: batched except on CPU)")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(measure(args.batch, args.steps, args.rounds, args.batched_aux)))
    return
  rows = []
  for devices in [int(d) for d in args.devices.split(",")]:
    env = dict(os.environ)
    if devices > 1:
      # Fake CPU devices are fixed at start-up; only these rows are forced onto the CPU.
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                          + f" --xla_force_host_platform_device_count={devices}").strip()
      env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run([sys.executable, __file__, "--worker", "--batch", str(args.batch),
                             "--steps", str(args.steps), "--rounds", str(args.rounds),
                             "--batched_aux", args.batched_aux],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
      sys.stderr.write(result.stderr)
      raise SystemExit(f"worker for {devices} device(s) failed")
    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
  print(f"batch {args.batch}; {args.rounds} interleaved rounds of {args.steps} steps per "
        f"objective after warm-up (fastest round); GroupCE batched auxiliary pass: "
        f"{args.batched_aux}; jax {rows[0]['jax']}")
  print("| devices | LogLoss step ms | GroupCE step ms | ratio (interleaved) | examples/s LogLoss | "
        "examples/s GroupCE | quantizer ms (share) | auxiliary pass ms (share) | "
        "grouped ListCE fwd+bwd ms (share) | load avg before/after | CPU-time ratio |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    g = r["groupce_step_s"]
    print(f"| {_label(r)} | {1e3 * r['logloss_step_s']:.2f} | {1e3 * g:.2f} | "
          f"{r['ratio_groupce_to_logloss']:.2f}x | {r['batch'] / r['logloss_step_s']:,.0f} | "
          f"{r['batch'] / g:,.0f} | {1e3 * r['quantizer_s']:.3f} ({r['quantizer_s'] / g:.0%}) | "
          f"{1e3 * r['aux_pass_s']:.3f} ({r['aux_pass_s'] / g:.0%}) | "
          f"{1e3 * r['group_ce_s']:.3f} ({r['group_ce_s'] / g:.0%}) | "
          f"{r['load_average'][0]:.2f} / {r['load_average'][1]:.2f} | "
          + (f"{r['cpu_ratio_groupce_to_logloss']:.2f}x |" if r["platform"] == "cpu" else "- |"))
  print("BENCHMARK_JSON " + json.dumps({"benchmark": "train_step", "batch": args.batch,
                                       "results": rows}))


if __name__ == "__main__":
  main()
