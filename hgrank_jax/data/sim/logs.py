"""Logged impressions from the simulated world, generated lazily in chunks.

A logged request picks a user in proportion to activity and retrieves
``candidates_per_request`` distinct candidates (a mix of the user's interest
categories, global popularity and uniform items). Most requests are served by
the logging policy, a noisy, popularity-biased version of the true click logit
whose top ``impressions_per_request`` candidates are shown in score order. A
``random_fraction`` of requests are random exposure instead: uniform items from
the whole catalogue in random order (like KuaiRand's random slice), which is
what makes position bias and relevance separable. Clicks and long views are
drawn from the true probabilities.

Chunk ``c`` holds requests ``[c * chunk_requests, (c + 1) * chunk_requests)``
and draws only from the stream ``(seed, LOG_STREAM, c)``, so any chunk can be
regenerated alone, in any order, on any host; memory is bounded by one chunk
plus the world. :func:`iter_log_chunks` yields chunks one by one for a writer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from hgrank_jax.data.sim.config import SimulatorConfig
from hgrank_jax.data.sim.world import (LOG_STREAM, SimWorld, build_world,
                                       observed_user_profiles, true_scores)


@dataclasses.dataclass(frozen=True)
class LogChunk:
  """One chunk of logged impressions, one row per impression (request-major).

  Attributes:
    index: chunk index.
    columns: model inputs, labels and bookkeeping, each ``[rows]``:
      request_id (int64, global), user_id, item_id, category, business,
      position, is_random (int32), click and long_view (float32 0/1).
    truth: ground truth, never a model input, each float32 ``[rows]``:
      relevance (click probability if examined), click_prob (at the shown
      position), long_view_prob (unconditional).
  """

  index: int
  columns: dict[str, np.ndarray]
  truth: dict[str, np.ndarray]

  @property
  def num_rows(self) -> int:
    return len(self.columns["item_id"])


def _first_distinct(slots: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per row, the first ``n`` distinct values of ``slots [R, m]`` in their order.

  Returns ``(chosen [R, n], num_distinct [R])``; rows with fewer than n distinct
  values are filled with repeats after their distinct values.
  """
  order = np.argsort(slots, axis=1, kind="stable")
  sorted_slots = np.take_along_axis(slots, order, axis=1)
  repeat_sorted = np.zeros(slots.shape, bool)
  # A stable sort keeps equal values in their original order, so the first of
  # each run is the earliest occurrence and every later one is a repeat.
  repeat_sorted[:, 1:] = sorted_slots[:, 1:] == sorted_slots[:, :-1]
  repeat = np.empty_like(repeat_sorted)
  np.put_along_axis(repeat, order, repeat_sorted, axis=1)
  keep = np.argsort(repeat, axis=1, kind="stable")[:, :n]
  return np.take_along_axis(slots, keep, axis=1), (~repeat).sum(axis=1)


def retrieve_candidates(world: SimWorld, rng: np.random.Generator, users: np.ndarray, n: int, *,
                        uniform_only: bool = False) -> np.ndarray:
  """Distinct candidate items per request, int32 ``[R, n]``.

  Each slot comes from the user's interest categories (probability
  ``retrieval_interest_mix``), uniformly from the catalogue
  (``retrieval_uniform_mix``) or from global popularity (the rest); with
  ``uniform_only`` every slot is uniform. Twice n slots are drawn and the first
  n distinct kept; the rare short rows are topped up with uniform draws.
  """
  cfg = world.config
  num_requests = len(users)
  slots_per_request = 2 * n
  shape = (num_requests, slots_per_request)
  if uniform_only:
    slots = rng.integers(0, world.num_items, size=shape, dtype=np.int32)
  else:
    source = rng.random(shape)
    from_interest = source < cfg.retrieval_interest_mix
    from_uniform = source >= 1.0 - cfg.retrieval_uniform_mix
    from_popularity = ~from_interest & ~from_uniform
    slots = np.empty(shape, np.int32)
    slot_users = np.broadcast_to(users[:, None], shape)
    slots[from_interest] = world.sample_items_in_categories(
        rng, world.sample_interest_categories(rng, slot_users[from_interest]))
    slots[from_popularity] = world.sample_popular_items(rng, int(from_popularity.sum()))
    slots[from_uniform] = rng.integers(0, world.num_items, size=int(from_uniform.sum()), dtype=np.int32)
  chosen, num_distinct = _first_distinct(slots, n)
  short = np.nonzero(num_distinct < n)[0]
  for _ in range(100):  # each round fails with tiny probability since num_items >= 2n
    if not len(short):
      return chosen.astype(np.int32)
    extra = rng.integers(0, world.num_items, size=(len(short), n), dtype=np.int32)
    refilled, count = _first_distinct(np.concatenate([chosen[short], extra], axis=1), n)
    chosen[short] = refilled
    short = short[count < n]
  raise RuntimeError("could not draw distinct candidates; is num_items much larger than n?")


def num_chunks(num_requests: int, chunk_requests: int) -> int:
  """Chunks needed for ``num_requests`` requests."""
  return -(-num_requests // chunk_requests)


def chunk_request_range(index: int, num_requests: int, chunk_requests: int) -> tuple[int, int]:
  """``[first, stop)`` request ids of chunk ``index``."""
  if not 0 <= index < num_chunks(num_requests, chunk_requests):
    raise IndexError(f"chunk {index} out of range [0, {num_chunks(num_requests, chunk_requests)})")
  first = index * chunk_requests
  return first, min(first + chunk_requests, num_requests)


def log_chunk(world: SimWorld, index: int) -> LogChunk:
  """Generates chunk ``index`` of the logs (deterministic in seed and index).

  Rows are ``impressions_per_request`` per request, requests in id order, then
  positions 0, 1, ... Cost and memory are O(chunk_requests * candidates * d).
  """
  cfg = world.config
  first, stop = chunk_request_range(index, cfg.num_requests, cfg.chunk_requests)
  num_requests, shown = stop - first, cfg.impressions_per_request
  rng = np.random.default_rng([cfg.seed, LOG_STREAM, index])
  users = world.sample_users(rng, num_requests)
  is_random = rng.random(num_requests) < cfg.random_fraction
  items = np.empty((num_requests, shown), np.int32)

  logged = np.nonzero(~is_random)[0]
  if len(logged):
    candidates = retrieve_candidates(world, rng, users[logged], cfg.candidates_per_request)
    logit = true_scores(world, users[logged, None], candidates)["logit"]
    # The logging policy sees the truth through noise and over-weights popularity.
    policy_score = (logit + cfg.logging_popularity_weight * world.item_log_popularity[candidates]
                    + cfg.logging_noise * rng.standard_normal(candidates.shape))
    top = np.argsort(-policy_score, axis=1, kind="stable")[:, :shown]
    items[logged] = np.take_along_axis(candidates, top, axis=1)
  randomised = np.nonzero(is_random)[0]
  if len(randomised):
    # Uniform slots are exchangeable, so their draw order is already a random order.
    items[randomised] = retrieve_candidates(world, rng, users[randomised], shown, uniform_only=True)

  truth = true_scores(world, users[:, None], items)
  click_prob = truth["relevance"] * cfg.position_bias(shown).astype(np.float32)[None, :]
  click = rng.random(items.shape) < click_prob
  long_view_prob = click_prob * truth["long_view_given_click"]
  # A long view needs a click: given the click it follows the conditional probability.
  long_view = click & (rng.random(items.shape) < truth["long_view_given_click"])

  columns = {
      "request_id": np.repeat(np.arange(first, stop, dtype=np.int64), shown),
      "user_id": np.repeat(users, shown),
      "item_id": items.ravel(),
      "category": world.item_category[items].ravel(),
      "business": world.item_business[items].ravel(),
      "position": np.tile(np.arange(shown, dtype=np.int32), num_requests),
      "is_random": np.repeat(is_random.astype(np.int32), shown),
      "click": click.ravel().astype(np.float32),
  }
  if cfg.user_profile_noise is not None:
    columns["user_profile"] = observed_user_profiles(world)[columns["user_id"]]
  row_truth = {"relevance": truth["relevance"].ravel(), "click_prob": click_prob.ravel()}
  if cfg.long_view:
    columns["long_view"] = long_view.ravel().astype(np.float32)
    row_truth["long_view_prob"] = long_view_prob.ravel().astype(np.float32)
  return LogChunk(index=index, columns=columns, truth=row_truth)


def iter_log_chunks(world: SimWorld | SimulatorConfig, *, start: int = 0, stop: int | None = None,
                    step: int = 1) -> Iterator[LogChunk]:
  """Lazily yields log chunks ``range(start, stop, step)`` (default: all of them).

  Nothing is generated until a chunk is requested, and a consumed chunk is not
  kept, so a writer holds one chunk at a time however large ``num_requests`` is.
  ``start=process_index, step=process_count`` gives each host its own chunks.
  ``world`` may be a config, in which case the world is built first.
  """
  return iter_chunks(world, "num_requests", log_chunk, start=start, stop=stop, step=step)


def iter_chunks(world, size_field: str, make_chunk, *, start: int = 0, stop: int | None = None,
                step: int = 1) -> Iterator[Any]:
  """Lazily yields ``make_chunk(world, index)`` for chunk indices ``range(start, stop, step)``.

  ``size_field`` names the config field counting requests (``num_requests`` for
  logs, ``num_list_requests`` for reranking lists); ``world`` may be a config.
  """
  if isinstance(world, SimulatorConfig):
    world = build_world(world)
  cfg = world.config
  total = num_chunks(getattr(cfg, size_field), cfg.chunk_requests)
  stop = total if stop is None else min(stop, total)
  for index in range(start, stop, step):
    yield make_chunk(world, index)


def concat_log_chunks(chunks) -> LogChunk:
  """Concatenates chunks (in the given order) into one; index is the first chunk's."""
  chunks = list(chunks)
  if not chunks:
    raise ValueError("no chunks to concatenate")
  return LogChunk(
      index=chunks[0].index,
      columns={k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns},
      truth={k: np.concatenate([c.truth[k] for c in chunks]) for k in chunks[0].truth})
