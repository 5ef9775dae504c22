r"""Per-list latency of the batched rerankers against one-list-at-a-time numpy.

  python -m hgrank_jax.rerank.benchmark            # n = 500, k = 50, batch 256

The numpy baselines are the way public DPP and MMR code runs: the same greedy
algorithm (incremental Cholesky for the DPP) over one list at a time. Prints
milliseconds per list and whether both pick the same items on the first lists.
"""

import argparse
import time

import jax
import numpy as np

from hgrank_jax.rerank.constrained import constrained
from hgrank_jax.rerank.diversity import calibrated, coverage, dpp_greedy, mmr


def numpy_dpp(quality, embeddings, k, *, jitter=1e-6, epsilon=1e-9):
  """Chen et al.'s fast greedy DPP MAP for one list (float64 numpy)."""
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
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


def numpy_mmr(relevance, embeddings, k, *, lam):
  """MMR for one list (numpy)."""
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
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


def _best_seconds(fn, repeats):
  jax.block_until_ready(fn())
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=500)
  parser.add_argument("--k", type=int, default=50)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--numpy_lists", type=int, default=32)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  n, k, batch, c = args.n, args.k, args.batch, 20
  quality = np.exp(rng.normal(size=(batch, n))).astype(np.float32)
  relevance = (quality / quality.max(1, keepdims=True)).astype(np.float32)
  embeddings = rng.normal(size=(batch, n, args.dim)).astype(np.float32)
  categories = rng.integers(0, c, size=(batch, n))
  target = rng.dirichlet(np.ones(c), size=batch).astype(np.float32)
  one_hot = np.eye(c, dtype=np.float32)[categories]
  batched = {
      "dpp_greedy": lambda: dpp_greedy(quality, embeddings, k),
      "mmr": lambda: mmr(relevance, embeddings, k, lam=0.5),
      "calibrated": lambda: calibrated(relevance, one_hot, target, k),
      "coverage": lambda: coverage(relevance, categories, k, num_categories=c),
      "constrained": lambda: constrained(relevance, categories, k, max_count=k // c + 2,
                                         max_run=1).indices,
  }
  print(f"n={n} k={k} batch={batch} on {jax.devices()[0].platform}")
  for name, fn in batched.items():
    print(f"{name:12s} batched JAX {1e3 * _best_seconds(fn, 3) / batch:8.3f} ms/list")
  lists = args.numpy_lists
  for name, reference, fn in (
      ("dpp_greedy", lambda b: numpy_dpp(quality[b].astype(np.float64),
                                         embeddings[b].astype(np.float64), k), batched["dpp_greedy"]),
      ("mmr", lambda b: numpy_mmr(relevance[b], embeddings[b], k, lam=0.5), batched["mmr"])):
    start = time.perf_counter()
    expected = [reference(b) for b in range(lists)]
    numpy_ms = 1e3 * (time.perf_counter() - start) / lists
    jax_ms = 1e3 * _best_seconds(fn, 3) / batch
    got = np.asarray(fn())[:lists]
    agree = np.mean([list(got[b]) == expected[b] for b in range(lists)])
    print(f"{name:12s} numpy loop  {numpy_ms:8.3f} ms/list; batched JAX {numpy_ms / jax_ms:.1f}x "
          f"faster; same picks on {100 * agree:.0f}% of {lists} lists")


if __name__ == "__main__":
  main()
