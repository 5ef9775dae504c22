r"""Speed, compile time and memory of the differentiable sorting methods.

  python benchmarks/sorting.py                          # batch 256, n = 256, 1024, 4096
  python benchmarks/sorting.py --platform gpu --cell_timeout 60
  python benchmarks/sorting.py --sizes 64,256 --batch 32 --repeats 3   # quick
  python benchmarks/sorting.py --ot_tradeoff            # OT accuracy against time

Every cell is ``soft_rank`` of one method at one list size n, batch B,
temperature 0.1, timed as the issue tables do: the forward pass, and forward +
backward (``value_and_grad`` of ``sum(soft_rank * w)`` for a fixed random w).
Per cell it reports:

* compile time of the forward+backward program (lower + compile, apart from
  any run), and the run time: best of ``--repeats``;
* ``x hard``: forward+backward time over the hard double argsort's time,
  measured interleaved with it in the same process (best of each), so the
  ratio is robust to a shared machine's load, which is recorded too;
* XLA's peak memory of the compiled program and whether gradients are finite.

Each method runs in its own worker process, one size after another, under a
time limit per cell (``--cell_timeout``): a method that overruns is stopped, its
cell reads "timeout" and its larger sizes are not tried, so one slow method
cannot eat the run. Dense O(n^2) methods are skipped where ``B n^2 4`` bytes
exceed ``--memory_limit_gb``. Optional anchors, measured only when installed
(never required): ``torchsort`` (its CPU op, and CUDA when torch sees a GPU)
and the ``fast_soft_sort`` numpy reference. ``--ot_tradeoff`` measures method
"ot" with fewer targets (``ot_num_targets``) and looser solver thresholds, as
time against the Spearman correlation of its ranks with the default "ot".

Every row is labelled with the device kind and jax version. Prints a table
and, last, one line ``JSON: {...}``.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

METHODS = ("hard", "fast", "softsort", "neuralsort", "ot")
DENSE = ("softsort", "neuralsort", "ot")
ANCHORS = ("torchsort", "fast_soft_sort")
CELL_PREFIX = "CELL "


# --- worker side ---------------------------------------------------------------


def _best_interleaved(functions, repeats):
  """Best-of-``repeats`` seconds of each function, calls interleaved."""
  best = [float("inf")] * len(functions)
  for _ in range(repeats):
    for i, fn in enumerate(functions):
      start = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - start)
  return best


def _device_label():
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {"device_kind": device.device_kind, "platform": device.platform,
          "jax": jax.__version__, "load_avg": os.getloadavg()[0]}


def _jax_cell(method, n, args, options):
  """Times one JAX method at one size; returns the cell's dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from hgrank_jax import ops  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(n)
  scores = jnp.asarray(rng.normal(size=(args.batch, n)).astype(np.float32))
  probe = jnp.asarray(rng.normal(size=(args.batch, n)).astype(np.float32))

  def hard_rank(s):
    return jnp.argsort(jnp.argsort(-s, axis=-1), axis=-1).astype(s.dtype) + 1.0

  def rank(s):
    if method == "hard":
      return hard_rank(s)
    return ops.soft_rank(s, method=method, temperature=args.temperature, **options)

  def loss(s, p):
    return jnp.sum(rank(s) * p)

  cell = {}
  start = time.perf_counter()
  both = jax.jit(jax.value_and_grad(loss)).lower(scores, probe).compile()
  cell["compile_s"] = time.perf_counter() - start
  forward = jax.jit(rank).lower(scores).compile()
  hard = jax.jit(hard_rank).lower(scores).compile()
  value, grad = both(scores, probe)
  cell["grad_finite"] = bool(jnp.isfinite(grad).all() & jnp.isfinite(value))
  jax.block_until_ready(forward(scores))
  jax.block_until_ready(hard(scores))
  times = _best_interleaved(
      [lambda: jax.block_until_ready(both(scores, probe)),
       lambda: jax.block_until_ready(forward(scores)),
       lambda: jax.block_until_ready(hard(scores))], args.repeats)
  cell["fwd_bwd_ms"], cell["forward_ms"], cell["hard_ms"] = (t * 1e3 for t in times)
  cell["x_hard"] = times[0] / times[2]
  analysis = both.memory_analysis()
  if analysis is not None:
    cell["peak_mb"] = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                       + analysis.temp_size_in_bytes) / 2**20
  if options:
    reference = jax.jit(lambda s: ops.soft_rank(
        s, method=method, temperature=args.temperature))(scores)
    cell["spearman_vs_default"] = _spearman(np.asarray(rank(scores)),
                                            np.asarray(reference))
  return cell


def _spearman(a, b):
  """Mean over rows of the Spearman correlation of two rank arrays [B, n]."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(np.mean([stats.spearmanr(x, y).statistic for x, y in zip(a, b)]))


def _anchor_cell(name, n, args):
  """torchsort / fast_soft_sort soft ranks, forward+backward, if installed."""
  rng = np.random.default_rng(n)
  scores = rng.normal(size=(args.batch, n)).astype(np.float32)
  probe = rng.normal(size=(args.batch, n)).astype(np.float32)
  if name == "torchsort":
    import torch  # pylint: disable=g-import-not-at-top
    import torchsort  # pylint: disable=g-import-not-at-top
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.tensor(-scores, device=device)  # torchsort ranks ascending
    w = torch.tensor(probe, device=device)

    def run():
      leaf = x.detach().requires_grad_()
      (torchsort.soft_rank(leaf, regularization_strength=args.temperature) * w).sum().backward()
      if device == "cuda":
        torch.cuda.synchronize()
    run()
    label = {"device_kind": f"torch {device}", "platform": device}
  else:
    from fast_soft_sort import numpy_ops  # pylint: disable=g-import-not-at-top

    def run():
      for row, weight in zip(-scores.astype(np.float64), probe.astype(np.float64)):
        op = numpy_ops.SoftRank(row, regularization_strength=args.temperature)
        op.compute()
        op.vjp(weight)
    run()
    label = {"device_kind": "numpy", "platform": "cpu"}
  (best,) = _best_interleaved([run], args.repeats)
  return dict(label, fwd_bwd_ms=best * 1e3)


def worker(args):
  options = json.loads(args.options)
  label = None
  for n in [int(x) for x in args.sizes.split(",")]:
    started = time.time()
    try:
      if args.method in ANCHORS:
        cell = _anchor_cell(args.method, n, args)
      else:
        if label is None:
          label = _device_label()
        cell = dict(label, **_jax_cell(args.method, n, args, options))
    except ImportError as error:
      cell = {"skipped": f"not installed ({error.name})"}
    except Exception as error:  # pylint: disable=broad-except
      cell = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    cell["wall_s"] = time.time() - started
    print(CELL_PREFIX + json.dumps({"n": n, "cell": cell}), flush=True)


# --- parent side ---------------------------------------------------------------


def run_method(method, sizes, args, options=None, label=None):
  """Runs one method's worker; returns {n: cell}, stopping it at a cell's time limit."""
  command = [sys.executable, os.path.abspath(__file__), "--worker", "--method", method,
             "--sizes", ",".join(map(str, sizes)), "--batch", str(args.batch),
             "--temperature", str(args.temperature), "--repeats", str(args.repeats),
             "--options", json.dumps(options or {})]
  env = dict(os.environ)
  if args.platform:
    env["JAX_PLATFORMS"] = args.platform
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),
                            daemon=True)
  reader.start()
  cells, seen, deadline = {}, 0, time.time() + args.cell_timeout + 30  # + start-up
  while len(cells) < len(sizes):
    time.sleep(0.2)
    for line in lines[seen:]:
      if line.startswith(CELL_PREFIX):
        record = json.loads(line[len(CELL_PREFIX):])
        cells[record["n"]] = record["cell"]
        _print_cell(label or method, record["n"], record["cell"])
        deadline = time.time() + args.cell_timeout
    seen = len(lines)
    if process.poll() is not None and not reader.is_alive():
      break
    if time.time() > deadline:
      process.kill()
      break
  process.wait()
  for n in sizes:
    if n not in cells:
      tail = "".join(lines[-3:]).strip().splitlines()
      cells[n] = ({"timeout": args.cell_timeout} if process.returncode in (-9, 137)
                  or time.time() > deadline else
                  {"error": tail[-1][:120] if tail else f"exit {process.returncode}"})
      _print_cell(label or method, n, cells[n])
      for later in sizes[sizes.index(n) + 1:]:
        cells.setdefault(later, {"skipped": "an earlier size did not finish"})
      break
  return cells


def _print_cell(name, n, cell):
  print(f"  {name}@{n}: " + json.dumps(
      {k: (round(v, 4) if isinstance(v, float) else v) for k, v in cell.items()}),
        flush=True)


def _fmt(cell, key, digits=1):
  for status in ("timeout", "skipped", "error"):
    if status in cell:
      return status
  value = cell.get(key)
  return "-" if value is None else f"{value:.{digits}f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--sizes", default="256,1024,4096")
  parser.add_argument("--methods", default=",".join(METHODS + ANCHORS))
  parser.add_argument("--temperature", type=float, default=0.1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--platform", default=None,
                      help="JAX_PLATFORMS for the workers (cpu, gpu, tpu); default: JAX's choice")
  parser.add_argument("--cell_timeout", type=float, default=120.0,
                      help="seconds one cell (compile + runs) may take")
  parser.add_argument("--memory_limit_gb", type=float, default=8.0,
                      help="skip dense methods whose B n^2 float32 kernel exceeds this")
  parser.add_argument("--ot_max_n", type=int, default=1024,
                      help="largest n at which method 'ot' runs")
  parser.add_argument("--ot_tradeoff", action="store_true",
                      help="also time 'ot' with fewer targets / looser thresholds")
  parser.add_argument("--tradeoff_n", type=int, default=1024)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return

  sizes = [int(x) for x in args.sizes.split(",")]
  methods = [m for m in args.methods.split(",") if m]
  unknown = set(methods) - set(METHODS + ANCHORS)
  if unknown:
    raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {METHODS + ANCHORS}")
  results = {}
  for method in methods:
    runnable = []
    for n in sizes:
      if method in DENSE and args.batch * n * n * 4 > args.memory_limit_gb * 2**30:
        results[f"{method}@{n}"] = {"skipped": "memory"}
      elif method == "ot" and n > args.ot_max_n:
        results[f"{method}@{n}"] = {"skipped": f"n > --ot_max_n {args.ot_max_n}"}
      else:
        runnable.append(n)
    if runnable:
      for n, cell in run_method(method, runnable, args).items():
        results[f"{method}@{n}"] = cell

  tradeoff = {}
  if args.ot_tradeoff:
    for targets, threshold in ((None, 1e-2), (256, 1e-3), (64, 1e-3), (16, 1e-3)):
      options = {"ot_threshold": threshold}
      if targets is not None:
        options["ot_num_targets"] = targets
      name = f"ot targets={targets or 'n'} threshold={threshold:g}"
      cell = run_method("ot", [args.tradeoff_n], args, options, label=name)
      tradeoff[name] = cell[args.tradeoff_n]

  label = next((c for c in results.values() if "device_kind" in c and c.get("platform") != "cpu"
                or "device_kind" in c), {})
  print(f"\nsoft_rank, batch {args.batch}, temperature {args.temperature}: "
        f"{label.get('device_kind', '?')}, jax {label.get('jax', '?')}, "
        f"load average {label.get('load_avg', float('nan')):.2f}; best of {args.repeats}; "
        "x hard = forward+backward / hard double argsort, interleaved in one process")
  header = (f"{'method':<16}{'n':>6}{'compile s':>11}{'forward ms':>12}"
            f"{'fwd+bwd ms':>12}{'x hard':>9}{'peak MB':>9}  finite")
  print(header)
  print("-" * len(header))
  for method in methods:
    for n in sizes:
      cell = results.get(f"{method}@{n}", {})
      print(f"{method:<16}{n:>6}{_fmt(cell, 'compile_s', 2):>11}{_fmt(cell, 'forward_ms', 2):>12}"
            f"{_fmt(cell, 'fwd_bwd_ms', 2):>12}{_fmt(cell, 'x_hard', 1):>9}"
            f"{_fmt(cell, 'peak_mb', 0):>9}  {cell.get('grad_finite', '')}")
  if tradeoff:
    print(f"\nOT accuracy against time at n = {args.tradeoff_n} "
          "(Spearman of ranks with the default 'ot', mean over lists)")
    for name, cell in tradeoff.items():
      print(f"  {name:<34} fwd+bwd {_fmt(cell, 'fwd_bwd_ms', 1):>9} ms   "
            f"Spearman {_fmt(cell, 'spearman_vs_default', 4)}")
  print("JSON: " + json.dumps({
      "benchmark": "sorting", "batch": args.batch, "temperature": args.temperature,
      "device_kind": label.get("device_kind"), "jax": label.get("jax"),
      "results": results, "ot_tradeoff": tradeoff}))


if __name__ == "__main__":
  main()
