"""Reranking requests from the official KuaiRand logs: one candidate list per user and day.

The bundled KuaiRand subset is too sparse for lists (about 3.4 test rows per
user and no categories), but the official releases log every exposure. This
module turns a release read by :func:`hgrank_jax.data.official.kuairand.read` into the
same :class:`~hgrank_jax.data.sim.lists.RequestLists` the simulator produces,
so every reranker and the comparison of ``launch.rerank`` run on it unchanged.

A request is one user's exposures from the standard recommender
(``is_rand`` = 0) on one date: repeated exposures of a video that day become one
candidate labelled 1 if any of them was positive; a day with more than
``num_candidates`` videos keeps a seeded random subset; a list is kept when it
has at least ``min_candidates`` candidates, a positive and a negative (a list
without both cannot tell two orders apart). Everything a reranker reads is
known before that date, so no split leaks its labels into its inputs:

* ``initial_score``: the logit of the video's smoothed label rate over all
  exposures (standard and random) on earlier dates,
  ``(clicks + s * p0) / (exposures + s)`` with ``s = prior_strength`` and ``p0``
  the rate of all earlier exposures (0.5 on the first date). Candidates are
  sorted by it, so slot j is this initial ranker's rank j; ties go in seeded
  random order. A caller may pass its own per-log-row scores instead (e.g. a
  Layer 1 scorer evaluated on the rows), in which case leakage is its
  responsibility.
* ``history_category_counts``: the user's positives per category on earlier dates.
* ``category``: the video's first tag (the reader's ``category``, 0 = no tag);
  ``item_embedding``: the video's tag set, multi-hot and scaled to unit length
  (no tag: zeros), so MMR, DPP and intra-list diversity see tag overlap;
  ``business``: the video type (AD / NORMAL / unknown), the one business line
  KuaiRand records; ``item_value``: 1 (KuaiRand logs no per-click value).

The truth is the observed label (``is_click`` by default), not a click
probability: ``truth["relevance"]`` is 0/1, ``position_bias`` is the DCG
discount ``1 / log2(2 + p)`` and ``repeat_decay`` discounts a repeated
category, so ``RequestLists.true_utility`` is the DCG of the observed labels
with diminishing returns for repeated categories ("label utility"). It scores
only reorderings of exposed videos, the usual offline protocol for reranking
on logs; it is not a counterfactual estimate of a new list's clicks.
"""

from __future__ import annotations

import pathlib

import numpy as np

from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.official import kuairand
from hgrank_jax.data.sim.lists import RequestLists


def _rate_logit(positives, exposures, prior, strength):
  rate = (positives + strength * prior) / (exposures + strength)
  return np.log(rate) - np.log1p(-rate)


def earlier_date_totals(entity: np.ndarray, day: np.ndarray, column: np.ndarray,
                        weight: np.ndarray, width: int, num_days: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per (entity, day) sums of ``weight`` into ``column``, and the same over earlier days.

  Each row adds ``weight`` to entry ``column`` of its (entity, day); the sums
  are dense in the ``width`` columns only, never ``[N, width]``, so a category
  histogram over millions of log rows stays small.

  Args:
    entity: int ``[N]`` (a user or a video per log row).
    day: int ``[N]`` day index in ``[0, num_days)``.
    column: int ``[N]`` in ``[0, width)``; weight: float ``[N]``.
    width: number of columns.
    num_days: number of distinct days.

  Returns:
    (keys int64 ``[G]`` = entity * num_days + day, sorted; totals float64
    ``[G, width]`` over the rows of that entity and day; before float64
    ``[G, width]`` over the rows of that entity on strictly earlier days).
  """
  keys, inverse = np.unique(entity.astype(np.int64) * num_days + day, return_inverse=True)
  totals = np.bincount(inverse.reshape(-1) * width + column, weights=weight,
                       minlength=len(keys) * width).reshape(len(keys), width)
  running = np.cumsum(totals, axis=0)
  owner = keys // num_days
  first = np.r_[True, owner[1:] != owner[:-1]]
  start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
  before = running - totals - (running[start] - totals[start])
  return keys, totals, before


def tag_embeddings(tags: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """Unit-length multi-hot vectors of comma-separated tag lists.

  Args:
    tags: strings ``[V]`` such as ``"20,43"`` ("" = no tag).

  Returns:
    (float32 ``[V, T]`` with ``1 / sqrt(number of tags)`` at each tag (zeros
    for no tag), the T tags in numeric order).
  """
  split = [[t.strip() for t in str(text).split(",") if t.strip()] for text in tags]
  vocabulary = csv_core.sorted_vocabulary(t for row in split for t in row)
  index = {tag: i for i, tag in enumerate(vocabulary)}
  matrix = np.zeros((len(tags), len(vocabulary)), np.float32)
  for row, row_tags in enumerate(split):
    known = sorted({index[t] for t in row_tags if t in index})
    if known:
      matrix[row, known] = 1.0 / np.sqrt(len(known))
  return matrix, vocabulary


def build_request_lists(columns: dict[str, np.ndarray], *, video_ids: np.ndarray,
                        video_embedding: np.ndarray, num_categories: int,
                        num_candidates: int = 50, min_candidates: int = 20,
                        label: str = "is_click", prior_strength: float = 20.0,
                        repeat_decay: float = 0.8, seed: int = 0,
                        initial_scores: np.ndarray | None = None
                        ) -> tuple[RequestLists, dict]:
  """Candidate lists per user and date from joined KuaiRand log columns.

  Args:
    columns: the columns of :func:`kuairand.read` (``user_id``, ``video_id``,
      ``category``, ``video_type``, ``date``, ``is_rand``, ``time_ms`` and the
      labels), ``[N]`` each.
    video_ids: int ``[V]`` and video_embedding: float32 ``[V, d]``, the item
      embedding of each video id (see :func:`tag_embeddings`).
    num_categories: category vocabulary size (unknown included).
    num_candidates: n, the candidate slots per list.
    min_candidates: smallest list kept (after taking at most n).
    label: the relevance label, one of ``kuairand.LABELS``.
    prior_strength: s of the smoothed rate behind ``initial_score``.
    repeat_decay: gamma of the label utility, in (0, 1].
    seed: seeds the subset of over-long days and the order of tied scores.
    initial_scores: optional float ``[N]`` per log row replacing the smoothed
      rate logit.

  Returns:
    (lists, info). ``lists.inputs`` follows ``RequestLists`` plus ``date``
    int32 ``[R]``; requests are sorted by date, then user. ``info`` counts the
    user-days kept and dropped (by reason) and the dates.

  Raises:
    ValueError: on a bad setting, or when no user-day qualifies.
  """
  if label not in kuairand.LABELS:
    raise ValueError(f"label must be one of {kuairand.LABELS}, got {label!r}")
  if not 1 <= min_candidates <= num_candidates:
    raise ValueError(f"need 1 <= min_candidates <= num_candidates, got {min_candidates} and "
                     f"{num_candidates}")
  if not 0.0 < repeat_decay <= 1.0 or prior_strength <= 0:
    raise ValueError(f"repeat_decay must lie in (0, 1] and prior_strength be > 0, got "
                     f"{repeat_decay} and {prior_strength}")
  n_rows = len(columns["user_id"])
  if initial_scores is not None and np.shape(initial_scores) != (n_rows,):
    raise ValueError(f"initial_scores must have shape ({n_rows},), got {np.shape(initial_scores)}")
  dates, day = np.unique(columns["date"], return_inverse=True)
  num_days = len(dates)
  positive = columns[label].astype(np.float64)
  user = columns["user_id"].astype(np.int64)
  video = columns["video_id"].astype(np.int64)
  category = columns["category"].astype(np.int64)
  if category.max(initial=0) >= num_categories:
    raise ValueError(f"category ids reach {category.max()} but num_categories is {num_categories}")

  # The user's positives per category on earlier dates (any exposure).
  user_keys, _, user_before = earlier_date_totals(user, day, category, positive, num_categories,
                                                  num_days)
  # The video's exposures (column 0) and positives (column 1) on earlier dates,
  # and the rate of all earlier exposures.
  video_keys, _, video_before = earlier_date_totals(
      np.concatenate([video, video]), np.concatenate([day, day]),
      np.repeat([0, 1], n_rows), np.concatenate([np.ones(n_rows), positive]), 2, num_days)
  per_day = np.stack([np.bincount(day, minlength=num_days),
                      np.bincount(day, weights=positive, minlength=num_days)], 1)
  earlier = np.cumsum(per_day, 0) - per_day
  prior = np.where(earlier[:, 0] > 0, earlier[:, 1] / np.maximum(earlier[:, 0], 1), 0.5)
  if initial_scores is None:
    row_video_group = np.searchsorted(video_keys, video * num_days + day)
    exposures, positives = video_before[row_video_group].T
    score = _rate_logit(positives, exposures, prior[day], prior_strength)
  else:
    score = np.asarray(initial_scores, np.float64)

  # Candidates: standard exposures, one per (user, date, video), positive if any exposure was.
  standard = np.flatnonzero(columns["is_rand"] == 0)
  user_day = user[standard] * num_days + day[standard]
  pair_key, first_row, pair_of_row = np.unique(
      user_day * (video.max() + 1) + video[standard], return_index=True, return_inverse=True)
  pair_of_row = pair_of_row.reshape(-1)
  pair_user_day = pair_key // (video.max() + 1)
  pair_label = np.zeros(len(pair_key))
  np.maximum.at(pair_label, pair_of_row, positive[standard])
  pair_row = standard[first_row]        # a representative log row (the same video and day)
  pair_score = score[pair_row]
  rng = np.random.default_rng(seed)
  tie = rng.permutation(len(pair_key))
  group_keys, group_of_pair, group_size = np.unique(pair_user_day, return_inverse=True,
                                                    return_counts=True)
  group_of_pair = group_of_pair.reshape(-1)
  # A seeded random subset of at most n videos per user-day.
  order = np.lexsort((tie, group_of_pair))
  rank = np.empty(len(pair_key), np.int64)
  rank[order] = np.arange(len(pair_key)) - np.r_[0, np.cumsum(group_size)][group_of_pair[order]]
  kept = rank < num_candidates
  kept_size = np.minimum(group_size, num_candidates)
  kept_positives = np.bincount(group_of_pair[kept], weights=pair_label[kept],
                               minlength=len(group_keys))
  too_small = kept_size < min_candidates
  no_positive = ~too_small & (kept_positives == 0)
  no_negative = ~too_small & ~no_positive & (kept_positives == kept_size)
  use = ~(too_small | no_positive | no_negative)
  if not use.any():
    raise ValueError(f"no user-day has >= {min_candidates} standard exposures with both a positive "
                     f"and a negative {label!r}; {len(group_keys)} user-days in the logs")

  # Requests sorted by date, then user; candidates by initial score, ties in seeded order.
  group_user, group_day = group_keys // num_days, group_keys % num_days
  requests = np.flatnonzero(use)
  requests = requests[np.lexsort((group_user[requests], group_day[requests]))]
  request_of_group = np.full(len(group_keys), -1)
  request_of_group[requests] = np.arange(len(requests))
  members = np.flatnonzero(kept & use[group_of_pair])
  request = request_of_group[group_of_pair[members]]
  members = members[np.lexsort((tie[members], -pair_score[members], request))]
  request = request_of_group[group_of_pair[members]]
  starts = np.r_[0, np.cumsum(np.bincount(request, minlength=len(requests)))]
  slot = np.arange(len(members)) - starts[request]

  num_requests, n = len(requests), num_candidates
  where = np.zeros((num_requests, n), bool)
  where[request, slot] = True

  def scatter(values, dtype):
    out = np.zeros((num_requests, n) + values.shape[1:], dtype)
    out[request, slot] = values
    return out

  rows = pair_row[members]
  embedding_row, found = csv_core.lookup(video[rows], video_ids)
  if not found.all():
    raise ValueError(f"{int((~found).sum())} candidate videos have no embedding row")
  user_group = np.searchsorted(user_keys, group_keys[requests])
  history = user_before[user_group]
  inputs = {
      "request_id": np.arange(num_requests, dtype=np.int64),
      "user_id": group_user[requests].astype(np.int32),
      "date": dates[group_day[requests]].astype(np.int32),
      "history_category_counts": np.rint(history).astype(np.int32),
      "item_id": scatter(video[rows], np.int32),
      "category": scatter(category[rows], np.int32),
      "business": scatter(columns["video_type"][rows], np.int32),
      "item_embedding": scatter(np.asarray(video_embedding, np.float32)[embedding_row],
                                np.float32),
      "item_value": where.astype(np.float32),
      "initial_score": scatter(pair_score[members], np.float32),
      "where": where,
  }
  truth = {
      "relevance": scatter(pair_label[members], np.float32),
      "position_bias": (1.0 / np.log2(2.0 + np.arange(n))).astype(np.float32),
      "repeat_decay": np.float32(repeat_decay),
  }
  info = {"user_days": int(len(group_keys)), "lists": int(num_requests),
          "dropped_too_few_candidates": int(too_small.sum()),
          "dropped_no_positive": int(no_positive.sum()),
          "dropped_no_negative": int(no_negative.sum()),
          "truncated_to_num_candidates": int((group_size[use] > n).sum()),
          "mean_candidates": float(where.sum(1).mean()),
          "mean_positives": float(truth["relevance"].sum(1).mean()),
          "dates": [int(d) for d in np.unique(inputs["date"])], "label": label,
          "initial_score": "earlier-date smoothed rate" if initial_scores is None else "given"}
  return RequestLists(inputs=inputs, truth=truth), info


def date_splits(dates: np.ndarray, valid_days: int, test_days: int) -> tuple[slice, slice, slice]:
  """Train / validation / test slices of date-sorted requests: the last dates are the test.

  Args:
    dates: int ``[R]``, non-decreasing.
    valid_days, test_days: number of distinct dates in validation and test.

  Returns:
    three slices covering ``range(R)`` in order.

  Raises:
    ValueError: when the dates are not sorted or leave a split empty.
  """
  dates = np.asarray(dates)
  if np.any(np.diff(dates) < 0):
    raise ValueError("requests must be sorted by date")
  distinct = np.unique(dates)
  if valid_days < 1 or test_days < 1 or len(distinct) < valid_days + test_days + 1:
    raise ValueError(f"{len(distinct)} dates with lists ({distinct.tolist()}) cannot give "
                     f">= 1 training date, {valid_days} validation and {test_days} test dates")
  valid_start = int(np.searchsorted(dates, distinct[-(valid_days + test_days)]))
  test_start = int(np.searchsorted(dates, distinct[-test_days]))
  return slice(0, valid_start), slice(valid_start, test_start), slice(test_start, len(dates))


def load(manual_dir: pathlib.Path | str, config: str = "1k", *, skip_malformed: bool = False,
         **settings) -> tuple[RequestLists, dict]:
  """Reads an official release and builds its lists (see :func:`build_request_lists`).

  Args:
    manual_dir: directory with the official CSV files (``kuairand.expected_files``).
    config: "pure", "1k" or "27k"; 1K and 27K log hundreds of exposures per
      user and day, Pure about two, so Pure yields few lists.
    skip_malformed: as for :func:`kuairand.read`.
    **settings: keyword arguments of :func:`build_request_lists` other than
      the video embeddings and the category count.

  Returns:
    (lists, info) with the reader's info under ``info["reader"]`` and
    ``info["num_categories"]``, ``info["num_business"]``, ``info["tags"]``.
  """
  spec, columns, reader_info, videos = kuairand.read_with_videos(manual_dir, config,
                                                                 skip_malformed=skip_malformed)
  embedding, tags = tag_embeddings(videos["tag"])
  num_categories = spec.categorical_feature("category").vocab_size
  lists, info = build_request_lists(columns, video_ids=videos["video_id"],
                                    video_embedding=embedding,
                                    num_categories=num_categories, **settings)
  info.update({"reader": reader_info, "num_categories": num_categories,
               "num_business": spec.categorical_feature("video_type").vocab_size, "tags": tags,
               "source": reader_info["source"]})
  return lists, info
