"""Seeded train/validation/test splits per user, as the paper's protocol.

The paper (seed 002, section 6.1.1) splits each dataset 70/10/20 at random,
stratified so that every user has positives in every subset. :func:`split_rows`
implements that for any dataset, vectorised over users (no per-user Python
loop), and also a chronological per-user variant. The exact rule, which the
paper leaves open, is pinned here and is the default:

1. Split sizes per user: largest-remainder rounding of ``n_u * fractions``, so
   each size is within one row of the exact share (ties go to the later split,
   i.e. test before validation before train). A user with at least
   ``min_rows_each`` rows (default 3) gets at least one row in every split,
   taken from the largest split; this only changes users with fewer than 10 rows.
2. Stratification (random method, labels given): a user with P >= 1 positives
   puts one positive into each of min(P, number of non-empty splits) distinct
   splits, chosen at random with probability proportional to the fractions
   (sampled without replacement); so a user with >= 3 rows and >= 3 positives
   has a positive in every split, and one with a single positive has it in the
   training split with probability 0.7. The remaining rows are shuffled and fill
   the remaining capacity.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
  f = np.asarray(fractions, dtype=np.float64)
  if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
    raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
  return f


def per_user_split_sizes(rows_per_user: np.ndarray, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                         *, min_rows_each: int = 3) -> np.ndarray:
  """Rows each user puts in train, valid and test.

  Args:
    rows_per_user: int array ``[U]``, rows of each user.
    fractions: shares of train, valid, test; sum to 1.
    min_rows_each: users with at least this many rows get >= 1 row in every split
      that has a positive fraction (0 disables).

  Returns:
    int64 array ``[U, 3]`` whose rows sum to ``rows_per_user``.
  """
  f = _check_fractions(fractions)
  n = np.asarray(rows_per_user, dtype=np.int64)
  exact = n[:, None] * f[None, :]
  sizes = np.floor(exact + 1e-9).astype(np.int64)
  remainder = exact - sizes
  missing = n - sizes.sum(axis=1)
  # Largest remainder first; on equal remainders the later split wins (a stable
  # sort over the reversed column order), which favours the evaluation splits.
  order = 2 - np.argsort(-remainder[:, ::-1], axis=1, kind="stable")
  rank_of_split = np.empty_like(order)
  np.put_along_axis(rank_of_split, order, np.arange(3)[None, :].repeat(len(n), 0), axis=1)
  sizes += rank_of_split < missing[:, None]
  if min_rows_each > 0:
    eligible = (n >= min_rows_each)[:, None] & (f[None, :] > 0)
    for split in range(3):
      short = eligible[:, split] & (sizes[:, split] == 0)
      if not short.any():
        continue
      donor = np.argmax(np.where(np.arange(3)[None, :] == split, -1, sizes[short]), axis=1)
      rows = np.nonzero(short)[0]
      sizes[rows, donor] -= 1
      sizes[rows, split] += 1
  return sizes


def _within_group_rank(sorted_groups: np.ndarray) -> np.ndarray:
  """0-based position of each element within its run, for an array sorted by group."""
  n = len(sorted_groups)
  if n == 0:
    return np.zeros(0, np.int64)
  starts = np.r_[0, np.nonzero(np.diff(sorted_groups))[0] + 1]
  run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
  return np.arange(n) - run_start


def split_rows(user_ids: np.ndarray, labels: np.ndarray | None = None, *,
               fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
               method: str = "random", timestamps: np.ndarray | None = None,
               min_rows_each: int = 3) -> Mapping[str, np.ndarray]:
  """Splits rows into train/valid/test per user (see the module docstring for the rule).

  Args:
    user_ids: int array ``[N]``; any non-negative or negative ids (only equality matters).
    labels: optional array ``[N]``; ``labels > 0`` marks positives for stratification
      (random method only). None splits without stratification.
    fractions: shares of train, valid and test.
    seed: random seed; the same inputs and seed give the same split.
    method: "random" (stratified, the paper's protocol) or "time" (each user's
      earliest rows train, then valid, then the latest test; ties in time are
      broken by row order).
    timestamps: array ``[N]``, required for method="time".
    min_rows_each: see :func:`per_user_split_sizes`.

  Returns:
    {"train", "valid", "test"} -> sorted int64 row indices; every row is in
    exactly one split.
  """
  user_ids = np.asarray(user_ids)
  if user_ids.ndim != 1:
    raise ValueError(f"user_ids must be 1-D, got shape {user_ids.shape}")
  n_rows = len(user_ids)
  if labels is not None and np.shape(labels) != (n_rows,):
    raise ValueError(f"labels shape {np.shape(labels)} does not match user_ids shape ({n_rows},)")
  if method not in ("random", "time"):
    raise ValueError(f"method must be 'random' or 'time', got {method!r}")
  if method == "time":
    if timestamps is None or np.shape(timestamps) != (n_rows,):
      raise ValueError("method='time' needs timestamps with the same shape as user_ids")
  _check_fractions(fractions)
  rng = np.random.default_rng(seed)

  _, user_index, rows_per_user = np.unique(user_ids, return_inverse=True, return_counts=True)
  sizes = per_user_split_sizes(rows_per_user, fractions, min_rows_each=min_rows_each)
  split_of_row = np.empty(n_rows, np.int64)

  if method == "time":
    order = np.lexsort((np.arange(n_rows), np.asarray(timestamps), user_index))
    position = _within_group_rank(user_index[order])
    user_sizes = sizes[user_index[order]]
    split_of_row[order] = (position >= user_sizes[:, 0]).astype(np.int64) + (
        position >= user_sizes[:, 0] + user_sizes[:, 1])
    return _indices_by_split(split_of_row)

  positive = np.zeros(n_rows, bool) if labels is None else np.asarray(labels) > 0
  num_users = len(rows_per_user)
  positives_per_user = np.bincount(user_index, weights=positive, minlength=num_users).astype(np.int64)
  # Splits that receive a guaranteed positive: non-empty splits in a random order
  # drawn proportionally to the fractions (Gumbel top-k = sampling without replacement).
  f = np.asarray(fractions, np.float64)
  with np.errstate(divide="ignore"):
    keys = np.log(f)[None, :] + rng.gumbel(size=(num_users, 3))
  keys = np.where(sizes > 0, keys, -np.inf)
  guaranteed_order = np.argsort(-keys, axis=1, kind="stable")
  num_guaranteed = np.minimum(positives_per_user, (sizes > 0).sum(axis=1))

  # Rank rows within user: positives first, each group in random order.
  order = np.lexsort((rng.random(n_rows), ~positive, user_index))
  position = _within_group_rank(user_index[order])
  row_user = user_index[order]
  is_guaranteed = position < num_guaranteed[row_user]
  guaranteed_split = guaranteed_order[row_user, np.minimum(position, 2)]
  split_of_row[order[is_guaranteed]] = guaranteed_split[is_guaranteed]

  # The remaining rows, reshuffled, fill each user's remaining capacity in split order.
  capacity = sizes.copy()
  np.add.at(capacity, (row_user[is_guaranteed], guaranteed_split[is_guaranteed]), -1)
  rest = order[~is_guaranteed]
  rest = rest[np.lexsort((rng.random(len(rest)), user_index[rest]))]
  rest_user = user_index[rest]
  rest_position = _within_group_rank(rest_user)
  cap = capacity[rest_user]
  split_of_row[rest] = (rest_position >= cap[:, 0]).astype(np.int64) + (
      rest_position >= cap[:, 0] + cap[:, 1])
  return _indices_by_split(split_of_row)


def _indices_by_split(split_of_row: np.ndarray) -> Mapping[str, np.ndarray]:
  return {name: np.nonzero(split_of_row == i)[0] for i, name in enumerate(SPLIT_NAMES)}
