r"""Rerankers: batched JAX latency against one-list-at-a-time numpy, greedy gap to exact.

Two measurements:

* Per-list latency of every inference reranker (``dpp_greedy``, ``mmr``,
  ``calibrated``, ``coverage``, ``constrained``) on a batch of random lists
  (default n = 500, k = 50, batch 256), against a straightforward numpy
  implementation of the same greedy run over one list at a time, the way
  public DPP and MMR code works (the numpy DPP builds the n x n kernel and
  runs Chen et al.'s incremental Cholesky); DPP is also compared with a numpy
  loop that uses ``dpp_greedy``'s own k x d basis trick, the fair baseline
  for the batching alone. JAX times exclude compilation
  (one warm-up call) and are the best of ``--repeats``; the jitted function is
  checked not to retrace between calls. Each row also reports on how many of
  the first lists both implementations pick the same items.
* The constrained greedy against the MILP optimum (``exact``) on simulator
  request lists (n = 50, k = 10, at most 2 items per category, no two adjacent
  items of one category, relevance = the initial ranker's probability): mean
  and max relative gap in the position-weighted objective; and its
  infeasibility rate, on those lists and on random instances with min and max
  counts, counted only over instances where a feasible list exists (decided
  by the MILP).

  python benchmarks/rerank.py                          # full size
  python benchmarks/rerank.py --n 100 --k 10 --batch 32 --gap_lists 20   # quick

Prints a table and one line ``JSON: {...}``.
"""

import argparse
import json
import time

import jax
import numpy as np

from hgrank_jax.data import SimulatorConfig, make_request_lists
from hgrank_jax.rerank.constrained import constrained, exact, list_objective
from hgrank_jax.rerank.diversity import calibrated, coverage, dpp_greedy, mmr


def _unit(embeddings):
  return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def numpy_dpp(quality, embeddings, k, *, jitter=1e-6, epsilon=1e-9):
  """Chen et al.'s fast greedy DPP MAP for one list (float64 numpy, full kernel)."""
  unit = _unit(embeddings)
  kernel = quality[:, None] * (unit @ unit.T) * quality[None, :] + jitter * np.eye(len(quality))
  rows, schur, picks = np.zeros((k, len(quality))), np.diag(kernel).copy(), []
  for t in range(k):
    pick = int(np.argmax(schur))
    if schur[pick] <= epsilon:
      break
    picks.append(pick)
    row = (kernel[pick] - rows[:t].T @ rows[:t, pick]) / np.sqrt(schur[pick])
    rows[t] = row
    schur = schur - row ** 2
    schur[picks] = -np.inf
  return picks + [-1] * (k - len(picks))


def numpy_dpp_basis(quality, embeddings, k, *, jitter=1e-6, epsilon=1e-9):
  """The same greedy DPP for one list with ``dpp_greedy``'s k x d basis (float64 numpy).

  The fair baseline for the batched JAX code: no n x n kernel, one n x d
  matrix-vector product per step, exactly the algorithm ``dpp_greedy`` runs.
  """
  factors = quality[:, None] * _unit(embeddings)
  schur = np.sum(factors * factors, -1) + jitter
  basis = np.zeros((k, factors.shape[1]))
  available = np.ones(len(quality), bool)
  picks = []
  for t in range(k):
    pick = int(np.argmax(np.where(available, schur, -np.inf)))
    if not available[pick] or schur[pick] <= epsilon:
      break
    picked = factors[pick]
    residual = picked - basis[:t].T @ (basis[:t] @ picked)
    basis[t] = residual / np.sqrt(schur[pick])
    schur = schur - (factors @ basis[t]) ** 2
    available[pick] = False
    picks.append(pick)
  return picks + [-1] * (k - len(picks))


def numpy_mmr(relevance, embeddings, k, *, lam):
  """MMR for one list (numpy, full similarity matrix)."""
  unit = _unit(embeddings)
  similarity = unit @ unit.T
  max_sim = np.zeros(len(relevance))
  free = np.ones(len(relevance), bool)
  picks = []
  for t in range(k):
    gain = np.where(free, lam * relevance - (1 - lam) * (max_sim if t else 0.0), -np.inf)
    pick = int(np.argmax(gain))
    picks.append(pick)
    free[pick] = False
    max_sim = similarity[pick] if t == 0 else np.maximum(max_sim, similarity[pick])
  return picks


def numpy_calibrated(relevance, item_dist, target, k, *, lam=0.5, alpha=0.01):
  """Steck's greedy for one list (numpy)."""
  free = np.ones(len(relevance), bool)
  relevance_sum, dist_sum, picks = 0.0, np.zeros(item_dist.shape[1]), []
  for t in range(k):
    smoothed = (1 - alpha) * (dist_sum[None] + item_dist) / (t + 1.0) + alpha * target[None]
    kl = np.sum(np.where(target > 0, target * np.log(np.where(target > 0, target, 1.0)
                                                     / smoothed), 0.0), 1)
    gain = np.where(free, (1 - lam) * (relevance_sum + relevance) - lam * kl, -np.inf)
    pick = int(np.argmax(gain))
    picks.append(pick)
    free[pick] = False
    relevance_sum, dist_sum = relevance_sum + relevance[pick], dist_sum + item_dist[pick]
  return picks


def numpy_coverage(relevance, categories, k, weights):
  """Greedy weighted probabilistic coverage for one list (numpy)."""
  uncovered = np.ones(len(weights))
  free = np.ones(len(relevance), bool)
  picks = []
  for _ in range(k):
    gain = np.where(free, weights[categories] * relevance * uncovered[categories], -np.inf)
    pick = int(np.argmax(gain))
    picks.append(pick)
    free[pick] = False
    uncovered[categories[pick]] *= 1 - relevance[pick]
  return picks


def numpy_constrained(scores, categories, k, num_categories, max_count, max_run):
  """The feasible greedy for one list (numpy): best pick that keeps the list completable."""
  available = np.bincount(categories, minlength=num_categories)
  counts = np.zeros(num_categories, int)
  hi = np.full(num_categories, max_count)
  free = np.ones(len(scores), bool)
  last, run, picks = -1, 0, []
  order = np.argsort(-scores, kind="stable")
  for t in range(k):
    rest = k - t - 1
    for i in order:
      if not free[i]:
        continue
      c = categories[i]
      new_run = run + 1 if c == last else 1
      if new_run > max_run:
        continue
      new_counts, new_available = counts.copy(), available.copy()
      new_counts[c] += 1
      new_available[c] -= 1
      caps = np.full(num_categories, (max_run * (rest + 1)) // (max_run + 1))
      caps[c] = (max_run * rest + max_run - new_run) // (max_run + 1)
      upper = np.minimum(np.minimum(new_available, hi - new_counts), caps)
      if (upper >= 0).all() and upper.sum() >= rest:
        break
    picks.append(int(i))
    free[i] = False
    counts[c] += 1
    available[c] -= 1
    last, run = c, new_run
  return picks


def _best_seconds(fn, repeats):
  jax.block_until_ready(fn())                 # compile and warm up
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def _cache_size(fn):
  size = getattr(fn, "_cache_size", None)
  return size() if callable(size) else None


def latency(args):
  """Per-list milliseconds of the batched JAX rerankers and the numpy loops."""
  rng = np.random.default_rng(0)
  n, k, batch, c = args.n, args.k, args.batch, 20
  quality = np.exp(rng.normal(size=(batch, n))).astype(np.float32)
  relevance = (quality / quality.max(1, keepdims=True)).astype(np.float32)
  embeddings = rng.normal(size=(batch, n, args.dim)).astype(np.float32)
  categories = rng.integers(0, c, size=(batch, n))
  target = rng.dirichlet(np.ones(c), size=batch).astype(np.float32)
  one_hot = np.eye(c, dtype=np.float32)[categories]
  weights = target + 0.1
  max_count = k // c + 2
  # Device arrays, so the timed calls measure the rerankers, not host transfers.
  dq, dr, de, dc, dt, doh, dw = (jax.device_put(x) for x in (
      quality, relevance, embeddings, categories, target, one_hot, weights))
  cases = {
      "dpp_greedy": (lambda: dpp_greedy(dq, de, k), dpp_greedy,
                     lambda b: numpy_dpp(quality[b].astype(np.float64),
                                         embeddings[b].astype(np.float64), k)),
      "dpp_greedy vs k x d numpy": (
          lambda: dpp_greedy(dq, de, k), dpp_greedy,
          lambda b: numpy_dpp_basis(quality[b].astype(np.float64),
                                    embeddings[b].astype(np.float64), k)),
      "mmr": (lambda: mmr(dr, de, k, lam=0.5), mmr,
              lambda b: numpy_mmr(relevance[b], embeddings[b], k, lam=0.5)),
      "calibrated": (lambda: calibrated(dr, doh, dt, k), calibrated,
                     lambda b: numpy_calibrated(relevance[b].astype(np.float64),
                                                one_hot[b].astype(np.float64),
                                                target[b].astype(np.float64), k)),
      "coverage": (lambda: coverage(dr, dc, k, weights=dw), coverage,
                   lambda b: numpy_coverage(relevance[b].astype(np.float64), categories[b], k,
                                            weights[b].astype(np.float64))),
      "constrained": (lambda: constrained(dr, dc, k, max_count=max_count, max_run=1,
                                          num_categories=c).indices, None,
                      lambda b: numpy_constrained(relevance[b], categories[b], k, c, max_count,
                                                  1)),
  }
  rows = {}
  for name, (fn, jitted, reference) in cases.items():
    jax_s = _best_seconds(fn, args.repeats)
    before = _cache_size(jitted) if jitted is not None else None
    got = np.asarray(fn())
    retraced = None if before is None else _cache_size(jitted) != before
    reference(0)                               # warm up numpy/BLAS
    start = time.perf_counter()
    expected = [reference(b) for b in range(args.numpy_lists)]
    numpy_s = (time.perf_counter() - start) / args.numpy_lists
    jax_ms, numpy_ms = 1e3 * jax_s / batch, 1e3 * numpy_s
    agree = int(sum(list(got[b]) == list(expected[b]) for b in range(args.numpy_lists)))
    rows[name] = {"jax_ms_per_list": jax_ms, "numpy_ms_per_list": numpy_ms,
                  "speedup": numpy_ms / jax_ms, "same_picks": agree,
                  "compared_lists": args.numpy_lists, "retraced": retraced}
    print(f"  {name}: {rows[name]}", flush=True)
  return rows


def _random_feasibility(args):
  """Infeasible outputs of the greedy on random instances with min and max counts."""
  rng = np.random.default_rng(1)
  lists, n, k, c = args.random_lists, 12, 6, 4
  scores = rng.normal(size=(lists, n)).astype(np.float32)
  categories = rng.choice(c, size=(lists, n), p=[0.5, 0.25, 0.15, 0.1])
  lo = rng.integers(0, 3, size=(lists, c))
  hi = np.maximum(lo, rng.integers(1, 4, size=(lists, c)))
  greedy = constrained(scores, categories, k, min_count=lo, max_count=hi, max_run=2,
                       num_categories=c, best_effort=True)
  optimum = exact(scores, categories, k, min_count=lo, max_count=hi, max_run=2,
                  num_categories=c, best_effort=True)
  feasible = np.asarray(optimum.feasible)
  return {"instances": lists, "feasible_instances": int(feasible.sum()),
          "greedy_infeasible": int((feasible & ~np.asarray(greedy.feasible)).sum())}


def greedy_gap(args):
  """Constrained greedy vs exact MILP on simulator lists (n = 50, k = 10)."""
  lists = make_request_lists(SimulatorConfig(seed=0, num_list_requests=args.gap_lists,
                                             num_requests=1000, list_candidates=50))
  scores = 1.0 / (1.0 + np.exp(-lists.inputs["initial_score"]))
  categories, where = lists.inputs["category"], lists.inputs["where"]
  spec = dict(max_count=2, max_run=1, num_categories=20, where=where)
  jax.block_until_ready(constrained(scores, categories, 10, best_effort=True, **spec))  # compile
  start = time.perf_counter()
  greedy = jax.block_until_ready(constrained(scores, categories, 10, best_effort=True, **spec))
  greedy_ms = 1e3 * (time.perf_counter() - start) / len(scores)
  start = time.perf_counter()
  optimum = exact(scores, categories, 10, best_effort=True, **spec)
  exact_ms = 1e3 * (time.perf_counter() - start) / len(scores)
  feasible = np.asarray(optimum.feasible)
  greedy_value = list_objective(scores, np.asarray(greedy.indices))
  exact_value = list_objective(scores, np.asarray(optimum.indices))
  gap = ((exact_value - greedy_value) / exact_value)[feasible]
  result = {"lists": len(scores), "feasible_lists": int(feasible.sum()),
            "mean_relative_gap": float(gap.mean()), "max_relative_gap": float(gap.max()),
            "lists_with_gap": float((gap > 1e-9).mean()),
            "greedy_infeasible": int((feasible & ~np.asarray(greedy.feasible)).sum()),
            "greedy_ms_per_list": greedy_ms, "exact_ms_per_list": exact_ms,
            "random_instances": _random_feasibility(args)}
  print(f"  greedy gap: {result}", flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=500)
  parser.add_argument("--k", type=int, default=50)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--numpy_lists", type=int, default=32,
                      help="lists the numpy loops run (their time is per list)")
  parser.add_argument("--gap_lists", type=int, default=200)
  parser.add_argument("--random_lists", type=int, default=300)
  args = parser.parse_args()
  print(f"n={args.n} k={args.k} batch={args.batch} on {jax.devices()[0]}", flush=True)
  rows = latency(args)
  gap = greedy_gap(args)
  print(f"\nper-list latency, n={args.n} k={args.k} batch {args.batch} (JAX: best of "
        f"{args.repeats}, compile excluded; numpy: one list at a time over "
        f"{args.numpy_lists} lists)")
  header = (f"{'reranker':<28}{'JAX ms/list':>12}{'numpy ms/list':>15}{'speed-up':>10}"
            f"{'same picks':>12}")
  print(header)
  print("-" * len(header))
  for name, row in rows.items():
    print(f"{name:<28}{row['jax_ms_per_list']:>12.3f}{row['numpy_ms_per_list']:>15.3f}"
          f"{row['speedup']:>9.1f}x{row['same_picks']:>8}/{row['compared_lists']}")
  random = gap["random_instances"]
  print(f"\nconstrained greedy vs exact on {gap['feasible_lists']} feasible simulator lists "
        f"(n=50, k=10): mean gap {100 * gap['mean_relative_gap']:.3f}%, max "
        f"{100 * gap['max_relative_gap']:.3f}%, infeasible {gap['greedy_infeasible']}; random "
        f"min/max instances: infeasible {random['greedy_infeasible']} of "
        f"{random['feasible_instances']} feasible")
  print("JSON: " + json.dumps({"benchmark": "rerank", "n": args.n, "k": args.k,
                               "batch": args.batch, "device": str(jax.devices()[0]),
                               "latency": rows, "greedy_gap": gap}))


if __name__ == "__main__":
  main()
