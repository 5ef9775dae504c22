r"""Train-step throughput: LogLoss-only vs GroupCE (the paper's model) on the same scorer.

  python benchmarks/train_step.py [--batch 4096] [--devices 1,8] [--steps 20]

Times jitted train steps (forward, backward, AdamW update) on the bundled
KuaiRand subset, and breaks the GroupCE step down into its parts timed on their
own: the quantizer (ResidualVQ with its EMA update), the auxiliary pass (the
main network on the quantized user vector, forward and backward to that vector
only), and the grouped ListCE (Eq. 9) forward and backward on fixed logits and
codes. Each time is the fastest of 3 runs of --steps calls, which keeps it near
the uncontended cost on a shared machine. Each device count runs in its own process
(XLA fixes the fake CPU device count at start-up). Prints a table and one JSON
line prefixed BENCHMARK_JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _time(fn, *args, steps, repeats=3):
  """Seconds per call: the fastest of ``repeats`` runs of ``steps`` calls.

  Taking the fastest run keeps the figure close to the uncontended cost on a
  shared machine; one untimed call first leaves compilation out.
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / steps)
  return best


def measure(batch_size: int, steps: int) -> dict:
  import jax
  import jax.numpy as jnp
  import ml_collections
  import optax

  from hgrank_jax import losses
  from hgrank_jax.data import ArrayBatcher, load_dataset
  from hgrank_jax.models import RVQ_COLLECTION, ResidualVQ
  from hgrank_jax.train.objectives import build_objective, hgr_model_from_config
  from hgrank_jax.train.sharding import batch_sharding, data_mesh, replicated_sharding
  from hgrank_jax.train.state import init_train_state, make_optimizer
  from hgrank_jax.train.steps import make_train_step

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
  import common  # pylint: disable=g-import-not-at-top

  dataset = load_dataset("kuairand_sig:paper")
  mesh = data_mesh()
  batch = next(ArrayBatcher(dataset.split("train"), batch_size, seed=0, mesh=mesh))
  out = {"devices": jax.device_count(), "batch": batch_size}
  for variant in ("logloss", "groupce"):
    config = common.apply_variants(common.base_config(), variant)
    config.learning_rate = 1e-3
    objective = build_objective(config, dataset.spec)
    optimizer = make_optimizer(config)
    init = lambda key, b: init_train_state(objective, optimizer, key, b)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
    sharding = jax.tree.map(lambda _: replicated_sharding(mesh), abstract)
    state = jax.jit(init, out_shardings=sharding)(jax.random.PRNGKey(0), batch)
    step = make_train_step(objective, optimizer, mesh, sharding)
    state, _ = step(state, batch)
    holder = {"state": state}

    def one_step(batch, holder=holder, step=step):
      holder["state"], metrics = step(holder["state"], batch)  # the state is donated
      return metrics

    out[f"{variant}_step_s"] = _time(one_step, batch, steps=steps)
    if variant == "groupce":
      groupce_objective, groupce_state = objective, holder["state"]

  # Parts of the GroupCE step, each jitted on its own.
  config = common.apply_variants(common.base_config(), "groupce")
  hgr_model = hgr_model_from_config(config, dataset.spec)
  params = groupce_state["params"]
  user_embedding, item_embedding, context = hgr_model.apply(
      {"params": params}, batch, method=lambda m, b: m.scorer.encode(b, train=False))
  rvq = ResidualVQ(num_levels=config.hgr.num_levels, codebook_size=config.hgr.codebook_size)
  variables = rvq.init(jax.random.PRNGKey(0), user_embedding)
  quantize = jax.jit(lambda v, x: rvq.apply(v, x, update=True, mutable=[RVQ_COLLECTION]))
  _, updated = quantize(variables, user_embedding)  # leave the k-means initialisation behind
  variables = {**variables, **updated}
  out["quantizer_s"] = _time(quantize, variables, user_embedding, steps=steps)

  # The auxiliary pass: the main network on (e_u^q, e_i) forward, and backward to
  # e_u^q only (its parameters are frozen on this path).
  def aux_pass(params, user, item, context):
    logits = hgr_model.apply({"params": jax.lax.stop_gradient(params)}, user, item, context,
                             method=lambda m, u, i, c: m.scorer.main(u, i, c, train=True))
    return jnp.sum(logits)
  aux_grad = jax.jit(jax.grad(aux_pass, argnums=1))
  out["aux_pass_s"] = _time(aux_grad, params, user_embedding, item_embedding, context,
                            steps=steps)

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
  out["group_ce_s"] = _time(group_ce_grad, logits, labels, codes, log_sigma, steps=steps)
  out["ratio_groupce_to_logloss"] = out["groupce_step_s"] / out["logloss_step_s"]
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--devices", default="1,8")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(measure(args.batch, args.steps)))
    return
  rows = []
  for devices in [int(d) for d in args.devices.split(",")]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.setdefault("JAX_PLATFORMS", "cpu")
    result = subprocess.run([sys.executable, __file__, "--worker", "--batch", str(args.batch),
                             "--steps", str(args.steps)], env=env, capture_output=True, text=True,
                            check=True)
    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
  print(f"batch {args.batch}, {args.steps} timed steps after one warm-up step")
  print("| devices | LogLoss step ms | GroupCE step ms | ratio | examples/s LogLoss | "
        "examples/s GroupCE | quantizer ms (share) | auxiliary pass ms (share) | "
        "grouped ListCE fwd+bwd ms (share) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    g = r["groupce_step_s"]
    print(f"| {r['devices']} | {1e3 * r['logloss_step_s']:.1f} | {1e3 * g:.1f} | "
          f"{r['ratio_groupce_to_logloss']:.2f}x | {r['batch'] / r['logloss_step_s']:,.0f} | "
          f"{r['batch'] / g:,.0f} | {1e3 * r['quantizer_s']:.1f} ({r['quantizer_s'] / g:.0%}) | "
          f"{1e3 * r['aux_pass_s']:.1f} ({r['aux_pass_s'] / g:.0%}) | "
          f"{1e3 * r['group_ce_s']:.1f} ({r['group_ce_s'] / g:.0%}) |")
  print("BENCHMARK_JSON " + json.dumps({"benchmark": "train_step", "batch": args.batch,
                                       "results": rows}))


if __name__ == "__main__":
  main()
