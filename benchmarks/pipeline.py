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

Streaming at scale (``--simulator_rows N``, e.g. 10,000,000; ``--large`` for
50,000,000):

  python benchmarks/pipeline.py --simulator_rows 10000000 [--keep_dir DIR] [--devices 8]

writes the simulator's logs as array_record blocks one chunk at a time
(``hgrank_jax.data.sim.synthetic.write_blocks``: bounded memory), then reads the
train split (70%) for one epoch through grain twice: the input pipeline alone
(``StreamingBatcher`` placing global batches on the mesh) and training (the same
batches through the jitted train step of the simulator config's model, LogLoss,
batch ``--batch``). Reports rows/s of each, their ratio (pipeline / training;
>= 1 means the pipeline keeps up with the train step), the time to write, and
the peak resident memory of each phase (``VmHWM`` of /proc/self/status, reset
between phases through /proc/self/clear_refs) and of the whole process
(``getrusage``).
"""

import argparse
import csv
import json
import os
import pathlib
import random
import resource
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "kuairand_pure"


def write_logs(directory: pathlib.Path, rows: int, seed: int = 0) -> None:
  """Official-format KuaiRand-Pure logs over the fixture's users and videos."""
  from hgrank_jax.data.official import kuairand
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


def _peak_rss_mb() -> float:
  """Peak resident memory since the last reset (VmHWM), in MB; getrusage if unavailable."""
  try:
    for line in open("/proc/self/status"):
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
  except OSError:
    pass


def scale(args) -> None:
  """The streaming-at-scale benchmark (see the module docstring)."""
  import jax
  import numpy as np

  from hgrank_jax.data.sim import synthetic
  from hgrank_jax.data.formats.block_dataset import open_block_dataset
  from hgrank_jax.data.pipeline import StreamingBatcher
  from hgrank_jax.parallel import data_mesh, replicated_sharding
  from hgrank_jax.train.loop import MAX_STEPS_IN_FLIGHT
  from hgrank_jax.train.objectives import build_objective
  from hgrank_jax.train.state import init_train_state, make_optimizer
  from hgrank_jax.train.steps import make_train_step
  sys.path.insert(0, str(ROOT))  # configs/ is a package at the repository root
  from configs import simulator as simulator_config  # pylint: disable=g-import-not-at-top

  rows = 50_000_000 if args.large else args.simulator_rows
  # The "default" world (20k users, 20k items) with as many requests as rows asked
  # for: the "large" world's 200k-user tables make a CPU train step update ~10x
  # more embedding rows per step without changing what the pipeline has to read.
  sim = synthetic.config_for_view(args.simulator_view, seed=0, num_requests=rows // 10)
  tmp = None
  if args.keep_dir:
    directory = pathlib.Path(args.keep_dir)
  else:
    tmp = tempfile.mkdtemp(prefix="hgrank_blocks_")
    directory = pathlib.Path(tmp) / "blocks"
  phases = {}
  try:
    _reset_peak_rss()
    start = time.perf_counter()
    if not (directory / "blocks.json").exists():
      last = [start]

      def progress(written):
        if time.perf_counter() - last[0] > 30:
          last[0] = time.perf_counter()
          print(f"  wrote {written:,} rows ({written / (last[0] - start):,.0f} rows/s, "
                f"peak RSS {_peak_rss_mb():,.0f} MB)", flush=True)

      synthetic.write_blocks(sim, directory, block_rows=args.stream_block_rows,
                             progress=progress)
    write_seconds = time.perf_counter() - start
    data = open_block_dataset(directory)
    total_rows = sum(data.num_rows(s) for s in data.splits)
    size_bytes = sum(f.stat().st_size for f in directory.iterdir())  # array_record compresses
    phases["write"] = {"rows": total_rows, "seconds": write_seconds,
                       "peak_rss_mb": _peak_rss_mb()}
    print(f"wrote {total_rows:,} rows ({size_bytes / 2**20:,.0f} MB on disk, compressed) in "
          f"{write_seconds:.0f}s",
          flush=True)

    mesh = data_mesh()
    source = data.source("train")
    make = lambda: StreamingBatcher(source, args.batch, seed=0, num_epochs=1, mesh=mesh,
                                    window_blocks=args.window_blocks)
    _reset_peak_rss()
    start, units = time.perf_counter(), 0
    for batch in make():
      jax.block_until_ready(batch)
      units += int(np.asarray(batch["mask"]).sum())
    phases["pipeline"] = {"rows": units, "seconds": time.perf_counter() - start,
                          "peak_rss_mb": _peak_rss_mb()}
    print(f"pipeline: {units:,} rows in {phases['pipeline']['seconds']:.1f}s", flush=True)

    config = simulator_config.get_config()
    config.batch_size = args.batch
    objective = build_objective(config, data.spec)
    optimizer = make_optimizer(config)
    first = next(StreamingBatcher(source, args.batch, shuffle=False, num_epochs=1, mesh=mesh))
    replicated = replicated_sharding(mesh)
    init = lambda key, batch: init_train_state(objective, optimizer, key, batch)
    shardings = jax.tree.map(lambda _: replicated, jax.eval_shape(init, jax.random.PRNGKey(0),
                                                                  first))
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0), first)
    train_step = make_train_step(objective, optimizer, mesh, shardings)
    state, metrics = train_step(state, first)  # compile outside the timed epoch
    jax.block_until_ready(metrics)
    _reset_peak_rss()
    start, units, steps, in_flight = time.perf_counter(), 0, 0, []
    for batch in make():
      state, metrics = train_step(state, batch)
      units += int(np.asarray(batch["mask"]).sum())
      steps += 1
      in_flight.append(metrics)
      if len(in_flight) > MAX_STEPS_IN_FLIGHT:
        jax.block_until_ready(in_flight.pop(0))  # as train_and_evaluate does
      if steps % 200 == 0:
        print(f"  train step {steps}: loss {float(metrics['loss']):.4f}", flush=True)
    jax.block_until_ready(state)
    phases["train"] = {"rows": units, "seconds": time.perf_counter() - start,
                       "peak_rss_mb": _peak_rss_mb(), "final_loss": float(metrics["loss"])}
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)

  process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  rate = {k: v["rows"] / v["seconds"] for k, v in phases.items()}
  ratio = rate["pipeline"] / rate["train"]
  print(f"\nsimulator rows={total_rows:,} world={args.simulator_view} (train {data.num_rows('train'):,}) "
        f"block_rows={args.stream_block_rows} window={args.window_blocks} blocks "
        f"batch={args.batch} devices={jax.device_count()} ({jax.devices()[0].platform}) "
        f"model={config.model.name} {tuple(config.model.hidden_layers)} LogLoss; "
        f"on disk {size_bytes / 2**20:,.0f} MB")
  print("| phase | rows | seconds | rows/s | peak RSS (MB) |\n|---|---|---|---|---|")
  names = {"write": "write array_record blocks (generate + split + encode)",
           "pipeline": "input pipeline alone (grain -> global arrays on the mesh)",
           "train": "training (same batches through the train step)"}
  for key, phase in phases.items():
    print(f"| {names[key]} | {phase['rows']:,} | {phase['seconds']:.1f} | {rate[key]:,.0f} | "
          f"{phase['peak_rss_mb']:,.0f} |")
  print(f"\npipeline / training throughput ratio: {ratio:.2f} "
        f"({'keeps up' if ratio >= 1 else 'does NOT keep up'}); peak RSS of the whole process "
        f"{process_peak:,.0f} MB (target <= 4096 MB: {'met' if process_peak <= 4096 else 'NOT met'})")
  print("BENCHMARK_JSON " + json.dumps({
      "benchmark": "pipeline_scale", "rows": total_rows, "world": args.simulator_view, "train_rows": data.num_rows("train"),
      "batch": args.batch, "devices": jax.device_count(), "block_rows": args.stream_block_rows,
      "window_blocks": args.window_blocks, "write_seconds": phases["write"]["seconds"],
      "rows_per_second": rate, "pipeline_over_train": ratio,
      "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in phases.items()},
      "process_peak_rss_mb": process_peak, "disk_mb": size_bytes / 2**20}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=300_000)
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--block_rows", type=int, default=1024)
  parser.add_argument("--window_blocks", type=int, default=8)
  parser.add_argument("--list_size", type=int, default=64)
  parser.add_argument("--simulator_rows", type=int, default=0,
                      help="streaming-at-scale mode: simulator rows to write and train on")
  parser.add_argument("--large", action="store_true", help="scale mode with 50M rows")
  parser.add_argument("--stream_block_rows", type=int, default=4096)
  parser.add_argument("--simulator_view", default="default",
                      help="scale mode: the simulator world (users, items) to draw rows from")
  parser.add_argument("--keep_dir", default="",
                      help="scale mode: write (or reuse) the blocks here instead of a temp dir")
  args = parser.parse_args()
  os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.simulator_rows or args.large:
    sys.path.insert(0, str(ROOT))
    scale(args)
    return

  import jax
  import numpy as np
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()

  from hgrank_jax.data import ArrayBatcher
  from hgrank_jax.data.official import tfds_builders
  from hgrank_jax.data.pipeline import BlockSource, StreamingBatcher
  from hgrank_jax.parallel import data_mesh

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
