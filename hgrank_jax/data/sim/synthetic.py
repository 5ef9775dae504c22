"""A hierarchical recommendation simulator with known ground truth.

No offline dataset has the structure the project studies (a user hierarchy,
categories, business lines, position bias, random exposure, true list
utilities), so this simulator generates it with the truth kept on the side.
The generative model is described in docs/simulator.md; the pieces are:

* :mod:`~hgrank_jax.data.sim.config` — :class:`SimulatorConfig`, every knob
  with its default;
* :mod:`~hgrank_jax.data.sim.world` — users on a trie of clusters, items, and
  the true click and long-view probabilities (:func:`true_scores`);
* :mod:`~hgrank_jax.data.sim.logs` — logged impressions (logging policy plus a
  random-exposure slice), generated lazily in deterministic chunks;
* :mod:`~hgrank_jax.data.sim.lists` — reranking requests and the list utility
  with diminishing returns for repeated categories.

This module assembles them: :func:`make_dataset` returns the pointwise logs as a
:class:`~hgrank_jax.data.dataset.Dataset` (split per user) plus their truth, and
:func:`make_request_lists` returns the reranking benchmark. For sizes that do
not fit in memory, :func:`write_blocks` streams :func:`iter_log_chunks` into
array_record shards (:class:`~hgrank_jax.data.formats.block_dataset.BlockDatasetWriter`)
one chunk at a time, for training with ``config.data_source = "streaming"``.

>>> sim = make_dataset(config_for_view("tiny", seed=0))
>>> sim.dataset.spec.labels, sim.dataset.num_rows("train") > 0
(('click', 'long_view'), True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from hgrank_jax.data.dataset import SPLITS, Dataset
from hgrank_jax.data.formats.block_dataset import BlockDatasetWriter
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature
from hgrank_jax.data.sim.config import SimulatorConfig
from hgrank_jax.data.sim.lists import (RequestLists, concat_lists, iter_list_chunks, list_chunk,
                                       list_utility)
from hgrank_jax.data.sim.logs import (LogChunk, concat_log_chunks, iter_log_chunks, log_chunk,
                                      num_chunks, retrieve_candidates)
from hgrank_jax.data.sim.world import SimWorld, build_world, true_scores

SPLIT_STREAM = 3  # the random streams of write_blocks' per-request split
from hgrank_jax.data.splits import split_rows

__all__ = [
    "SimulatorConfig", "SimWorld", "LogChunk", "RequestLists", "SimulatedLogs", "VIEWS",
    "build_world", "true_scores", "retrieve_candidates", "log_chunk", "iter_log_chunks",
    "concat_log_chunks", "num_chunks", "list_chunk", "iter_list_chunks", "concat_lists",
    "list_utility", "log_feature_spec", "make_dataset", "make_request_lists", "config_for_view",
    "load",
]

# Named sizes for the dataset registry; every other field keeps its default.
VIEWS = ("tiny", "small", "dense", "unbiased", "profiled", "default", "large")
_VIEW_SIZES: dict[str, dict[str, Any]] = {
    # A few hundred rows: unit tests and doctests.
    "tiny": dict(num_users=60, trie_depth=2, trie_branching=3, num_categories=6, num_items=200,
                 num_requests=40, candidates_per_request=20, impressions_per_request=10,
                 num_list_requests=16, list_candidates=20, chunk_requests=16),
    # About 200k rows: quick experiments on a CPU.
    "small": dict(num_users=2000, num_items=5000, num_requests=20000),
    # The small world observed 5x longer: about 1M rows, 500 per user, so that
    # per-user embeddings can pick up the cluster structure (issue 7 analysis).
    "dense": dict(num_users=2000, num_items=5000, num_requests=100000),
    # The small world without position bias: clicks follow relevance alone, so
    # user preferences (and their cluster trie) are the whole signal.
    "unbiased": dict(num_users=2000, num_items=5000, num_requests=20000, position_bias_power=0.0),
    # ... and with an observed user profile (true preference + noise) in the user tower.
    "profiled": dict(num_users=2000, num_items=5000, num_requests=20000, position_bias_power=0.0,
                     user_profile_noise=0.5),
    # About 2M rows: still comfortable in memory.
    "default": dict(num_users=20000, num_items=20000, num_requests=200000),
    # About 20M rows: stream with iter_log_chunks rather than materialising.
    "large": dict(num_users=200000, num_items=100000, num_requests=2000000, chunk_requests=16384),
}


def config_for_view(view: str, *, seed: int = 0, **overrides) -> SimulatorConfig:
  """The configuration of a named size (see ``VIEWS``), with optional overrides."""
  if view not in _VIEW_SIZES:
    raise ValueError(f"unknown simulator view {view!r}; views are {list(VIEWS)}")
  return SimulatorConfig(seed=seed, **{**_VIEW_SIZES[view], **overrides})


def log_feature_spec(config: SimulatorConfig) -> FeatureSpec:
  """Columns of the pointwise logs that a model may read, and their labels.

  user_id (and user_profile when ``config.user_profile_noise`` is set) feed the
  user tower; item_id, category and business the item tower; position and
  is_random (whether the request was random exposure) are context.
  Labels are click, then long_view when ``config.long_view``.
  """
  return FeatureSpec(
      categorical=(
          CategoricalFeature("user_id", config.num_users, tower="user"),
          CategoricalFeature("item_id", config.num_items, tower="item"),
          CategoricalFeature("category", config.num_categories, tower="item"),
          CategoricalFeature("business", config.num_business_lines, tower="item"),
          CategoricalFeature("position", config.impressions_per_request, tower="context"),
          CategoricalFeature("is_random", 2, tower="context"),
      ),
      numeric=((NumericFeature("user_profile", config.embedding_dim, tower="user"),)
               if config.user_profile_noise is not None else ()),
      labels=("click", "long_view") if config.long_view else ("click",),
      user_field="user_id",
      item_field="item_id",
      category_field="category",
  )


@dataclasses.dataclass(frozen=True)
class SimulatedLogs:
  """Pointwise logs: the Dataset models train on, and the truth they must not see.

  Attributes:
    dataset: splits of the columns of :func:`log_feature_spec` plus request_id
      (an int64 bookkeeping column for per-request grouping; not a feature).
    truth: split -> {"relevance", "click_prob", "long_view_prob"} float32 arrays
      aligned row for row with ``dataset.splits[split]``.
    world: the users and items that generated them.
  """

  dataset: Dataset
  truth: Mapping[str, Mapping[str, np.ndarray]]
  world: SimWorld


def make_dataset(config: SimulatorConfig, *, split_method: str = "random",
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), split_seed: int | None = None,
                 world: SimWorld | None = None, name: str = "synthetic") -> SimulatedLogs:
  """Generates the whole log in memory and splits it per user.

  Args:
    config: the simulator configuration (all ``num_requests`` are generated).
    split_method: "random" (per-user, stratified on clicks: the paper's
      protocol) or "time" (each user's earliest requests train, latest test;
      request ids are the clock).
    fractions: train, valid, test shares.
    split_seed: seed of the split; defaults to ``config.seed``.
    world: a world already built from ``config`` (built here otherwise).
    name: the Dataset name.

  Returns:
    A :class:`SimulatedLogs`. Memory is about 45 bytes per row.
  """
  if config.num_requests < 1:
    raise ValueError("make_dataset needs num_requests >= 1")
  world = build_world(config) if world is None else world
  if world.config != config:
    raise ValueError("world was built from a different config")
  logs = concat_log_chunks(iter_log_chunks(world))
  columns = logs.columns
  index = split_rows(columns["user_id"], columns["click"], fractions=fractions,
                     seed=config.seed if split_seed is None else split_seed, method=split_method,
                     timestamps=columns["request_id"] if split_method == "time" else None)
  splits = {s: {k: v[index[s]] for k, v in columns.items()} for s in SPLITS}
  truth = {s: {k: v[index[s]] for k, v in logs.truth.items()} for s in SPLITS}
  info = {
      "source": "hgrank_jax.data.sim.synthetic",
      "config": config.to_dict(),
      "split_method": split_method,
      "fractions": list(fractions),
      "num_rows": {s: int(len(index[s])) for s in SPLITS},
      "click_rate": float(columns["click"].mean()) if len(columns["click"]) else float("nan"),
      "business_lines": list(config.business_lines),
      "position_bias": config.position_bias(config.impressions_per_request).tolist(),
      "extra_columns": ["request_id"],
  }
  dataset = Dataset(name=name, spec=log_feature_spec(config), splits=splits, info=info)
  return SimulatedLogs(dataset=dataset, truth=truth, world=world)


def make_request_lists(config: SimulatorConfig, *, world: SimWorld | None = None) -> RequestLists:
  """All ``num_list_requests`` reranking requests in memory (see :class:`RequestLists`)."""
  if config.num_list_requests < 1:
    raise ValueError("make_request_lists needs num_list_requests >= 1")
  world = build_world(config) if world is None else world
  if world.config != config:
    raise ValueError("world was built from a different config")
  return concat_lists(iter_list_chunks(world))


def load(view: str = "small", *, seed: int = 0, **overrides) -> Dataset:
  """Registry loader: the pointwise logs of a named size; ``seed`` drives world and split."""
  return make_dataset(config_for_view(view, seed=seed, **overrides),
                      name=f"synthetic:{view}").dataset


def write_blocks(config: SimulatorConfig, directory, *,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), block_rows: int = 4096,
                 blocks_per_shard: int = 256, progress=None) -> dict[str, Any]:
  """Writes the logs of ``config`` as an array_record block dataset, in bounded memory.

  One log chunk is generated, split and written at a time (memory: one chunk,
  the world and one block per split). Unlike :func:`make_dataset`, which needs
  every row of a user to split per user, rows are split per *request*: each
  request goes to train/valid/test with probabilities ``fractions``, drawn from
  the stream ``(seed, SPLIT_STREAM, chunk)``, so the result is deterministic.
  Ground truth is not written. Open the result with
  :func:`~hgrank_jax.data.formats.block_dataset.open_block_dataset`.

  Args:
    config: the simulator configuration (``num_requests`` x
      ``impressions_per_request`` rows).
    directory: output directory (must not hold a block dataset yet).
    fractions: train, valid, test shares of requests.
    block_rows: rows per array_record record.
    blocks_per_shard: records per shard file.
    progress: optional ``callable(rows_written)`` called after every chunk.

  Returns:
    The stored metadata (``blocks.json``): rows and blocks per split.
  """
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise ValueError(f"write_blocks: fractions must be 3 shares summing to 1, got {fractions}")
  world = build_world(config)
  info = {"source": "hgrank_jax.data.sim.synthetic.write_blocks", "config": config.to_dict(),
          "split_method": "per request", "fractions": list(fractions)}
  writer = BlockDatasetWriter(directory, log_feature_spec(config), block_rows=block_rows,
                              blocks_per_shard=blocks_per_shard, info=info)
  written = 0
  edges = np.cumsum(fractions)[:-1]
  for chunk in iter_log_chunks(world):
    columns = chunk.columns
    requests, first = np.unique(columns["request_id"], return_inverse=True)
    draw = np.random.default_rng([config.seed, SPLIT_STREAM, chunk.index]).random(len(requests))
    split_of_row = np.searchsorted(edges, draw, side="right")[first]
    for index, split in enumerate(SPLITS):
      rows = np.flatnonzero(split_of_row == index)
      writer.write(split, {k: v[rows] for k, v in columns.items()})
    written += chunk.num_rows
    if progress is not None:
      progress(written)
  return writer.close()
