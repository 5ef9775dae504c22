"""Plain-numpy references shared by the reranker tests."""

import numpy as np


def satisfies_constraints(sequence, lo, hi, max_run) -> bool:
  """Whether a category sequence meets min/max counts per category and a max run length."""
  counts = np.bincount(sequence, minlength=len(lo))
  longest, run = 1, 1
  for a, b in zip(sequence[:-1], sequence[1:]):
    run = run + 1 if a == b else 1
    longest = max(longest, run)
  return bool((counts >= lo).all() and (counts <= hi).all() and longest <= max_run)
