r"""Pairwise logistic loss cost: hgrank_jax's tiled version vs Rax's n x n one.

  python benchmarks/pairwise_loss.py [--batch 4096] [--segments 400] [--steps 20] [--rounds 5]
                                     [--train_steps 5] [--no_train_step]

Two comparisons, each *interleaved in one process* (every round times each
variant once; the figure is the fastest round, best of ``--rounds``), so a
shared machine's load hits the variants alike:

* the loss alone, forward and backward (``jax.value_and_grad`` in ``logits``),
  on ``--batch`` rows with the labels of a KuaiRand training batch: LogLoss,
  pairwise logistic in ``--segments`` random segments (``lists="user"``-like)
  and over the whole batch as one list (``lists="batch"``), each both through
  ``hgrank_jax.losses.pairwise_logistic`` and through
  ``rax.pairwise_logistic_loss`` (what the package used before);
* the jitted train step (forward, backward, AdamW) of the Table 1 rows LogLoss
  and LogLoss + PairwiseLogistic (``lists="batch"``), the latter with either
  pairwise implementation (Rax is swapped into ``losses.LOSSES`` for its row).

Ratios are to LogLoss. The load average before and after is recorded. Prints a
table and one JSON line prefixed BENCHMARK_JSON.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import rax

from hgrank_jax import losses


def _rax_pairwise(logits, labels, *, where=None, segments=None):
  """The package's previous pairwise_logistic: Rax with n x n pair arrays."""
  valid = jnp.ones(logits.shape, bool) if where is None else where.astype(bool)
  labels = jnp.where(valid, labels.astype(logits.dtype), 0.0)
  return rax.pairwise_logistic_loss(logits, labels, where=valid, segments=segments)


def _time(fn, args, steps):
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def _interleaved(fns, steps, rounds):
  """Fastest-round seconds per call of each ``name -> (fn, args)``, rounds interleaved."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))  # compile outside the timing
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, (fn, args) in fns.items():
      times[name].append(_time(fn, args, steps))
  return {name: min(t) for name, t in times.items()}


def loss_costs(labels, num_segments, steps, rounds):
  n = labels.shape[0]
  logits = jax.random.normal(jax.random.PRNGKey(0), (n,))
  segments = jax.random.randint(jax.random.PRNGKey(1), (n,), 0, num_segments)
  mask = jnp.ones((n,), bool)

  def grad_of(loss, with_segments):
    if with_segments:
      f = lambda s, y, m, g: loss(s, y, where=m, segments=g)
    else:
      f = lambda s, y, m, g: loss(s, y, where=m)
    return jax.jit(jax.value_and_grad(f)), (logits, labels, mask, segments)

  fns = {
      "logloss": grad_of(losses.logloss, False),
      "pairwise_segments": grad_of(losses.pairwise_logistic, True),
      "rax_pairwise_segments": grad_of(_rax_pairwise, True),
      "pairwise_batch": grad_of(losses.pairwise_logistic, False),
      "rax_pairwise_batch": grad_of(_rax_pairwise, False),
  }
  return _interleaved(fns, steps, rounds)


def train_step_costs(batch_size, steps, rounds):
  from hgrank_jax.data import ArrayBatcher, load_dataset  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.objectives import build_objective  # pylint: disable=g-import-not-at-top
  from hgrank_jax.parallel.sharding import data_mesh  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.state import init_replicated_train_state, make_optimizer  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from configs import common  # pylint: disable=g-import-not-at-top

  dataset = load_dataset("kuairand_sig:paper")
  mesh = data_mesh()
  batch = next(ArrayBatcher(dataset.split("train"), batch_size, seed=0, mesh=mesh))
  fns = {}
  ours = losses.LOSSES["pairwise_logistic"]
  for name, variant, pairwise in (("logloss", "logloss", ours),
                                  ("pairwise", "pairwise", ours),
                                  ("rax_pairwise", "pairwise", _rax_pairwise)):
    losses.LOSSES["pairwise_logistic"] = pairwise
    try:
      config = common.apply_variants(common.base_config(), variant)
      config.objective.lists = "batch"
      objective = build_objective(config, dataset.spec)
    finally:
      losses.LOSSES["pairwise_logistic"] = ours
    optimizer = make_optimizer(config)
    state, sharding = init_replicated_train_state(objective, optimizer, mesh,
                                                  jax.random.PRNGKey(0), batch)
    step = make_train_step(objective, optimizer, mesh, sharding)
    holder = {"state": state}

    def one_step(batch, holder=holder, step=step):
      holder["state"], metrics = step(holder["state"], batch)  # the state is donated
      return metrics

    fns[name] = (one_step, (batch,))
  return _interleaved(fns, steps, rounds), batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--segments", type=int, default=400)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--train_steps", type=int, default=5)
  parser.add_argument("--no_train_step", action="store_true")
  args = parser.parse_args()
  load_before = os.getloadavg()[0]
  out = {"benchmark": "pairwise_loss", "batch": args.batch, "segments": args.segments,
         "steps": args.steps, "rounds": args.rounds, "platform": jax.devices()[0].platform,
         "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__}
  if args.no_train_step:
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.random(args.batch) < 0.3, jnp.float32)
    out["labels"] = "bernoulli(0.3)"
  else:
    out["train_step_s"], batch = train_step_costs(args.batch, args.train_steps, args.rounds)
    labels = jnp.asarray(batch["label"], jnp.float32)
    out["labels"] = "kuairand batch"
  out["positive_rate"] = float(jnp.mean(labels))
  out["loss_s"] = loss_costs(labels, args.segments, args.steps, args.rounds)
  out["load_average"] = [load_before, os.getloadavg()[0]]

  loss = out["loss_s"]
  base = loss["logloss"]
  print(f"{args.batch} rows, labels: {out['labels']} (positive rate "
        f"{out['positive_rate']:.2f}); {args.rounds} interleaved rounds, fastest; "
        f"load average {out['load_average'][0]:.2f} / {out['load_average'][1]:.2f}; "
        f"{out['device_kind']}, jax {out['jax']}")
  print("| loss, value and grad | ms | vs LogLoss |")
  print("|---|---|---|")
  for name, label in (("logloss", "LogLoss"),
                      ("pairwise_segments", f"pairwise, {args.segments} segments"),
                      ("rax_pairwise_segments", f"Rax pairwise, {args.segments} segments"),
                      ("pairwise_batch", "pairwise, one list"),
                      ("rax_pairwise_batch", "Rax pairwise, one list")):
    print(f"| {label} | {1e3 * loss[name]:.3f} | {loss[name] / base:.1f}x |")
  if "train_step_s" in out:
    step = out["train_step_s"]
    print("| train step (lists=batch) | ms | vs LogLoss | examples/s |")
    print("|---|---|---|---|")
    for name, label in (("logloss", "LogLoss"), ("pairwise", "LogLoss + PairwiseLogistic"),
                        ("rax_pairwise", "LogLoss + PairwiseLogistic (Rax)")):
      print(f"| {label} | {1e3 * step[name]:.2f} | {step[name] / step['logloss']:.2f}x | "
            f"{args.batch / step[name]:,.0f} |")
  print("BENCHMARK_JSON " + json.dumps(out))


if __name__ == "__main__":
  main()
