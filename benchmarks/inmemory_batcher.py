r"""Throughput of the in-memory batcher against grain's per-record path.

  python benchmarks/inmemory_batcher.py [--rows 184172] [--batch 4096] [--devices 8]

Batches the bundled KuaiRand training split (user_id, item_id, label) three ways:
ArrayBatcher yielding numpy, ArrayBatcher placing global arrays on a data mesh,
and grain's MapDataset over one record per row (shuffle + batch), which is what a
per-record TFDS/grain source costs before any decoding. Prints a table and one
JSON line (prefix ``BENCHMARK_JSON``).
"""

import argparse
import json
import os
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=0, help="rows to use (0: the whole split)")
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices for the mesh case")
  parser.add_argument("--grain_rows", type=int, default=100_000,
                      help="rows for the (slow) per-record grain case")
  args = parser.parse_args()
  os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import grain
  import jax
  import numpy as np

  from hgrank_jax.data import ArrayBatcher, load_dataset
  from hgrank_jax.parallel import data_mesh

  columns = dict(load_dataset("kuairand_sig:given").split("train"))
  if args.rows:
    columns = {k: v[:args.rows] for k, v in columns.items()}
  n = len(columns["label"])

  def time_epoch(batcher):
    start = time.perf_counter()
    rows = 0
    for batch in batcher:
      jax.block_until_ready(batch)
      rows += int(np.asarray(batch["mask"]).sum())
    return rows, time.perf_counter() - start

  results = {}
  rows, seconds = time_epoch(ArrayBatcher(columns, args.batch, seed=0, num_epochs=1))
  results["ArrayBatcher (numpy)"] = (rows, seconds)
  mesh = data_mesh()
  rows, seconds = time_epoch(ArrayBatcher(columns, args.batch, seed=0, num_epochs=1, mesh=mesh))
  results[f"ArrayBatcher ({mesh.devices.size}-device mesh)"] = (rows, seconds)

  m = min(args.grain_rows, n)
  records = [{k: v[i] for k, v in columns.items()} for i in range(m)]
  dataset = grain.MapDataset.source(records).shuffle(seed=0).batch(args.batch)
  start = time.perf_counter()
  rows = sum(len(b["label"]) for b in dataset)
  results["grain MapDataset, one record per row"] = (rows, time.perf_counter() - start)

  print(f"rows={n} batch={args.batch} devices={jax.device_count()} ({jax.devices()[0].platform})")
  print(f"| path | rows | seconds | rows/s |\n|---|---|---|---|")
  for name, (rows, seconds) in results.items():
    print(f"| {name} | {rows} | {seconds:.3f} | {rows / seconds:,.0f} |")
  rates = {name: rows / seconds for name, (rows, seconds) in results.items()}
  print("BENCHMARK_JSON " + json.dumps({"benchmark": "inmemory_batcher", "batch": args.batch,
                                       "rows": n, "rows_per_second": rates}))


if __name__ == "__main__":
  main()
