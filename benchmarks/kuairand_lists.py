r"""Time and memory of building KuaiRand reranking lists at the official releases' sizes.

  python benchmarks/kuairand_lists.py                       # KuaiRand-1K's shape, ~11.7M rows
  python benchmarks/kuairand_lists.py --users 200 --days 10 --rows_per_day 100

The official logs are not bundled, so the log columns are generated in memory
with KuaiRand-1K's shape (1,000 users, 31 dates, about 377 standard exposures
per user and date, 5% random exposures, a video catalogue of 4.37M ids with a
Zipf-like popularity, 60 first-tag categories, 30% clicks) and handed to
``kuairand_lists.build_request_lists``, the step after ``kuairand.read``. The
CSV reading itself is measured by the reader's own tests and
``launch.data_stats``. Prints a table and one JSON line (prefix
``BENCHMARK_JSON``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from hgrank_jax.data.official import kuairand_lists


def synthetic_columns(users, days, rows_per_day, num_videos, num_categories, seed=0):
  """Log columns shaped like ``kuairand.read``'s output (only those the builder reads)."""
  rng = np.random.default_rng(seed)
  n = users * days * rows_per_day
  # Zipf-like popularity: a few videos take most exposures, as in the real logs.
  video = np.minimum((rng.pareto(1.2, n) * 2000).astype(np.int64), num_videos - 1)
  video_category = rng.integers(0, num_categories, num_videos)
  columns = {
      "user_id": np.repeat(np.arange(users, dtype=np.int32), days * rows_per_day),
      "date": np.tile(np.repeat(20220408 + np.arange(days, dtype=np.int32), rows_per_day), users),
      "video_id": video.astype(np.int32),
      "category": video_category[video].astype(np.int32),
      "video_type": rng.integers(1, 3, n).astype(np.int32),
      "is_rand": (rng.random(n) < 0.05).astype(np.int8),
      "is_click": (rng.random(n) < 0.3).astype(np.float32),
      "long_view": (rng.random(n) < 0.2).astype(np.float32),
      "is_like": (rng.random(n) < 0.02).astype(np.float32),
  }
  return columns


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--users", type=int, default=1000)
  parser.add_argument("--days", type=int, default=31)
  parser.add_argument("--rows_per_day", type=int, default=377)
  parser.add_argument("--videos", type=int, default=4_369_953)
  parser.add_argument("--categories", type=int, default=60)
  parser.add_argument("--tags", type=int, default=60, help="width of the tag embedding")
  parser.add_argument("--num_candidates", type=int, default=50)
  args = parser.parse_args()

  start = time.perf_counter()
  columns = synthetic_columns(args.users, args.days, args.rows_per_day, args.videos,
                              args.categories)
  generate_s = time.perf_counter() - start
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  used = np.unique(columns["video_id"])
  embedding = np.zeros((len(used), args.tags), np.float32)
  embedding[np.arange(len(used)), used % args.tags] = 1.0
  start = time.perf_counter()
  lists, info = kuairand_lists.build_request_lists(
      columns, video_ids=used, video_embedding=embedding, num_categories=args.categories,
      num_candidates=args.num_candidates)
  build_s = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  rows = len(columns["user_id"])
  list_mb = sum(v.nbytes for v in lists.inputs.values()) / 2**20
  print("| log rows | lists | build s | rows/s | list arrays MB | peak RSS MB (columns alone) |")
  print("|---|---|---|---|---|---|")
  print(f"| {rows:,} | {info['lists']:,} | {build_s:.1f} | {rows / build_s:,.0f} | {list_mb:,.0f} "
        f"| {peak:,.0f} ({rss_before:,.0f}) |")
  print(f"(generating the columns took {generate_s:.1f} s)")
  print("BENCHMARK_JSON " + json.dumps({
      "benchmark": "kuairand_lists", "log_rows": rows, "lists": info["lists"],
      "build_s": round(build_s, 2), "rows_per_s": round(rows / build_s),
      "list_arrays_mb": round(list_mb, 1), "peak_rss_mb": round(peak),
      "columns_rss_mb": round(rss_before), "users": args.users, "days": args.days,
      "rows_per_day": args.rows_per_day, "num_candidates": args.num_candidates}))


if __name__ == "__main__":
  main()
