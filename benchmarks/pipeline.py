r"""Throughput of the streaming pipeline (grain over array_record blocks) vs in-memory.

  python benchmarks/pipeline.py [--rows 300000] [--batch 4096] [--devices 8]

Writes KuaiRand-Pure-format logs of ``--rows`` rows (joined with the real
feature sample in tests/fixtures/kuairand_pure) to a temporary directory,
builds them with the TFDS builder (array_record, blocks of >= ``--block_rows``
whole-user rows; the sample has 42 users, so a block is one user's rows), then
times one training epoch of every path over the same columns (all but the int64
``time_ms``):

* StreamingBatcher alone (numpy batches), rows and per-user lists;
* StreamingBatcher placing global arrays on a data mesh;
* ArrayBatcher over the same rows held in memory, numpy and on the mesh.

Prints a table and one JSON line (prefix ``BENCHMARK_JSON``).
"""

import argparse
import csv
import json
import os
import pathlib
import random
import shutil
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "kuairand_pure"


def write_logs(directory: pathlib.Path, rows: int, seed: int = 0) -> None:
  """Official-format KuaiRand-Pure logs over the fixture's users and videos."""
  from hgrank_jax.data import kuairand
  for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
    shutil.copy(FIXTURE / name, directory / name)
  with open(FIXTURE / "user_features_pure.csv") as f:
    users = [r["user_id"] for r in csv.DictReader(f)]
  with open(FIXTURE / "video_features_basic_pure.csv") as f:
    videos = [r["video_id"] for r in csv.DictReader(f)]
  rng = random.Random(seed)
  files = {"log_standard_4_08_to_4_21_pure.csv": rows * 9 // 10,
           "log_random_4_22_to_5_08_pure.csv": rows - rows * 9 // 10}
  serial = 0
  for name, count in files.items():
    with open(directory / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(kuairand.LOG_HEADER)
      for _ in range(count):
        writer.writerow([rng.choice(users), rng.choice(videos), 20220408, rng.randrange(2400),
                         1649390000000 + serial, rng.randint(0, 1), rng.randint(0, 1), 0, 0, 0, 0,
                         rng.randint(0, 1), 1000, 9000, 0, 0, 0, int("random" in name),
                         rng.randint(0, 4)])
        serial += 1


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=300_000)
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--block_rows", type=int, default=1024)
  parser.add_argument("--window_blocks", type=int, default=8)
  parser.add_argument("--list_size", type=int, default=64)
  args = parser.parse_args()
  os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax
  import numpy as np
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()

  from hgrank_jax.data import ArrayBatcher, tfds_builders
  from hgrank_jax.data.pipeline import BlockSource, StreamingBatcher
  from hgrank_jax.train import data_mesh

  with tempfile.TemporaryDirectory() as tmp:
    manual, data_dir = pathlib.Path(tmp, "manual"), pathlib.Path(tmp, "tfds")
    manual.mkdir()
    start = time.perf_counter()
    write_logs(manual, args.rows)
    builder = tfds_builders.prepare("kuairand", "pure", manual_dir=manual, data_dir=data_dir,
                                    block_rows=args.block_rows)
    build_seconds = time.perf_counter() - start
    dataset = tfds_builders.load_prepared("kuairand", "pure", data_dir=data_dir)
    names = [n for n in dataset.split("train") if n != "time_ms"]
    columns = {n: dataset.split("train")[n] for n in names}
    n = len(columns["user_id"])
    source = BlockSource.from_tfds(builder, "train", columns=names)
    mesh = data_mesh()

    def time_epoch(batcher, unit_key):
      start = time.perf_counter()
      units = 0
      for batch in batcher:
        jax.block_until_ready(batch)
        units += int(np.asarray(batch[unit_key]).sum())
      return units, time.perf_counter() - start

    results = {}
    stream = lambda **kw: StreamingBatcher(source, args.batch, seed=0, num_epochs=1,
                                           window_blocks=args.window_blocks, **kw)
    results["StreamingBatcher (numpy)"] = time_epoch(stream(), "mask")
    results[f"StreamingBatcher ({mesh.devices.size}-device mesh)"] = time_epoch(
        stream(mesh=mesh), "mask")
    lists = StreamingBatcher(source, max(8, args.batch // args.list_size), seed=0, num_epochs=1,
                             window_blocks=args.window_blocks, list_size=args.list_size)
    results[f"StreamingBatcher lists of <= {args.list_size} (numpy)"] = time_epoch(lists, "where")
    results["ArrayBatcher in memory (numpy)"] = time_epoch(
        ArrayBatcher(columns, args.batch, seed=0, num_epochs=1), "mask")
    results[f"ArrayBatcher in memory ({mesh.devices.size}-device mesh)"] = time_epoch(
        ArrayBatcher(columns, args.batch, seed=0, num_epochs=1, mesh=mesh), "mask")

  print(f"train rows={n} columns={len(names)} batch={args.batch} blocks={len(source)} "
        f"(>= {args.block_rows} rows) window={args.window_blocks} blocks "
        f"devices={jax.device_count()} ({jax.devices()[0].platform}); "
        f"write+build {build_seconds:.1f}s")
  print("| path | rows | seconds | rows/s |\n|---|---|---|---|")
  for name, (rows, seconds) in results.items():
    print(f"| {name} | {rows} | {seconds:.3f} | {rows / seconds:,.0f} |")
  rates = {name: rows / seconds for name, (rows, seconds) in results.items()}
  print("BENCHMARK_JSON " + json.dumps({"benchmark": "pipeline", "batch": args.batch, "rows": n,
                                       "columns": len(names), "block_rows": args.block_rows,
                                       "rows_per_second": rates}))


if __name__ == "__main__":
  main()
