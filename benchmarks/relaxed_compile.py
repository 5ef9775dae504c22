r"""Why SoftSort/NeuralSort compiled slowly on a GPU: compile time per formulation.

  python benchmarks/relaxed_compile.py                 # n = 1024, batch 256
  python benchmarks/relaxed_compile.py --n 256 --batch 64 --timeout 60

Compiles ``value_and_grad`` of ``sum(soft_rank * w)`` for SoftSort with its
Sinkhorn column normalisation (20 rounds) written four ways, each in a fresh
process under ``--timeout`` seconds, with the XLA flags named:

* ``dot/scan``: the matrix-vector products as ``einsum`` (XLA dots) inside
  ``lax.scan``: the formulation that took over 30 s at n = 1024 on an H200;
* ``dot/scan/autotune0``: the same with ``--xla_gpu_autotune_level=0``
  (no GEMM autotuning), to test whether autotuning is the cost;
* ``reduce/scan``: the products as multiply-and-reduce (what ``ops.relaxed``
  ships), which XLA fuses into reductions instead of GEMMs;
* ``reduce/unrolled``: the same rounds unrolled in Python.

Each row reports compile time, run time of the compiled program, and how many
GEMM calls (cuBLAS custom calls or Triton GEMM fusions) the optimised HLO holds.
Prints a table and one line ``JSON: {...}``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "dot/scan": ("dot", "scan", ""),
    "dot/scan/autotune0": ("dot", "scan", "--xla_gpu_autotune_level=0"),
    "reduce/scan": ("reduce", "scan", ""),
    "reduce/unrolled": ("reduce", "unrolled", ""),
}


def worker(args):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hgrank_jax.ops import relaxed, sorting  # pylint: disable=g-import-not-at-top

  product, loop = args.product, args.loop

  def col_mass(kernel, row_scale):
    if product == "dot":
      return jnp.einsum("...ki,...k->...i", kernel, row_scale)
    return jnp.sum(kernel * row_scale[..., :, None], axis=-2)

  def row_mass(kernel, col_scale):
    if product == "dot":
      return jnp.einsum("...ki,...i->...k", kernel, col_scale)
    return jnp.sum(kernel * col_scale[..., None, :], axis=-1)

  def ranks(scores):
    prep = sorting.prepare(scores, None, False)
    sorted_scores = jnp.take_along_axis(prep.scores, prep.order, axis=-1)
    logits = relaxed.softsort_logits(prep.scores, sorted_scores, 0.1)
    kernel = jax.nn.softmax(jnp.where(relaxed.support(prep.valid), logits, -1e30), -1)
    tiny = jnp.finfo(kernel.dtype).tiny

    def scaling_round(row_scale, _):
      col_scale = 1.0 / jnp.maximum(col_mass(kernel, row_scale), tiny)
      return 1.0 / jnp.maximum(row_mass(kernel, col_scale), tiny), col_scale

    row_scale = jnp.ones(kernel.shape[:-1], kernel.dtype)
    if loop == "scan":
      row_scale, col_scales = jax.lax.scan(scaling_round, row_scale, None, length=20)
      col_scale = col_scales[-1]
    else:
      for _ in range(20):
        row_scale, col_scale = scaling_round(row_scale, None)
    permutation = kernel * row_scale[..., :, None] * col_scale[..., None, :]
    positions = jnp.arange(1, scores.shape[-1] + 1, dtype=kernel.dtype)
    if product == "dot":
      return jnp.einsum("...ki,k->...i", permutation, positions)
    return jnp.sum(permutation * positions[:, None], axis=-2)

  rng = np.random.default_rng(0)
  scores = jnp.asarray(rng.normal(size=(args.batch, args.n)).astype(np.float32))
  probe = jnp.asarray(rng.normal(size=(args.batch, args.n)).astype(np.float32))
  start = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(lambda s: jnp.sum(ranks(s) * probe))).lower(
      scores).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(scores))
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    jax.block_until_ready(compiled(scores))
    best = min(best, time.perf_counter() - start)
  text = compiled.as_text()
  gemms = text.count("__cublas$gemm") + text.count("__triton_gemm") + text.count(
      "kind=kCustom") + text.count(" dot(")
  print("RESULT " + json.dumps({
      "compile_s": compile_s, "run_ms": best * 1e3, "gemm_calls": gemms,
      "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--timeout", type=float, default=90.0)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--product", help=argparse.SUPPRESS)
  parser.add_argument("--loop", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  results = {}
  for name in args.variants.split(","):
    product, loop, flags = VARIANTS[name]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(args.n),
               "--batch", str(args.batch), "--product", product, "--loop", loop]
    start = time.time()
    try:
      out = subprocess.run(command, capture_output=True, text=True, env=env,
                           timeout=args.timeout).stdout
      lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
      results[name] = json.loads(lines[-1][7:]) if lines else {"error": out[-200:]}
    except subprocess.TimeoutExpired:
      results[name] = {"timeout": args.timeout}
    results[name]["wall_s"] = time.time() - start
    print(f"  {name}: {results[name]}", flush=True)
  print(f"\nSoftSort + 20 normalisation rounds, value_and_grad, n = {args.n}, batch {args.batch}")
  print(f"{'formulation':<24}{'compile s':>12}{'run ms':>10}{'GEMMs':>7}")
  for name, cell in results.items():
    if "compile_s" in cell:
      print(f"{name:<24}{cell['compile_s']:>12.2f}{cell['run_ms']:>10.2f}{cell['gemm_calls']:>7}")
    else:
      print(f"{name:<24}{'timeout' if 'timeout' in cell else 'error':>12}")
  print("JSON: " + json.dumps({"benchmark": "relaxed_compile", "n": args.n,
                               "batch": args.batch, "results": results}))


if __name__ == "__main__":
  main()
