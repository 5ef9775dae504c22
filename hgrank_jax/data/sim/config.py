"""Configuration of the hierarchical recommendation simulator.

Every knob of the generative model (docs/simulator.md) lives in one frozen
dataclass, :class:`SimulatorConfig`, with defaults that give a mid-sized world
(2,000 users on a 3-level x 4-way trie, 5,000 items in 20 categories and four
business lines, click rates around 10%). ``dataclasses.replace(config, ...)``
changes a copy; :meth:`SimulatorConfig.to_dict` records it in a Dataset's info.
Sizes only change how much is generated, never the meaning of the other fields,
so a test can shrink a world and keep its statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
  """Parameters of the simulated world, its logs and its reranking requests.

  Attributes:
    seed: master seed; the world and every chunk derive their streams from it.

    num_users: number of users.
    trie_depth: levels of the user-cluster trie (L).
    trie_branching: children per trie node (K); there are K**L leaf clusters.
    embedding_dim: width d of user preferences and item embeddings.
    level_scale_decay: the node vector at trie level l (0-based) has standard
      deviation ``level_scale_decay ** l`` per coordinate, so coarse clusters
      explain more of a preference than fine ones.
    user_noise_scale: per-coordinate standard deviation of the individual part
      of a preference (what no cluster explains).

    num_categories: number of item categories (C).
    category_size_skew: Zipf exponent of the category shares of the catalogue
      (0 gives equal-sized categories).
    main_interest_weight: probability mass of a user's main category interest.
    num_secondary_interests: how many secondary interests a user has.
    secondary_interest_weight: mass shared equally by the secondary interests;
      the rest, ``1 - main - secondary``, is spread uniformly over all categories.
    cluster_interest_prob: probability that a user's main interest is the
      favourite category of their leaf cluster (otherwise uniform), which ties
      category tastes to the trie.
    activity_sigma: users' activity levels are log-normal with this sigma and
      mean 1; requests pick users in proportion to activity.
    history_length: number of past clicks summarised in a user's observed
      category history (a multinomial draw from the interest distribution).

    num_items: catalogue size.
    business_lines: names of the business lines.
    business_shares: share of the catalogue in each business line.
    business_click_offsets: additive logit offset of each line's click rate.
    business_values: mean value of a click per line (e.g. revenue for ads).
    business_value_sigma: log-normal spread of item values around the line mean.
    popularity_sigma: standard deviation of items' latent log-popularity.
    category_embedding_scale: weight of the category centre in an item
      embedding (items of one category point the same way).
    item_noise_scale: per-coordinate std of the item-specific embedding part.

    base_logit: intercept of the click logit.
    preference_weight: weight of the normalised preference-embedding affinity.
    category_weight: weight of ``log(C * interest(category))``.
    popularity_weight: weight of the standardised log-popularity.
    position_bias_power: examination probability at 0-based position k is
      ``(k + 1) ** -position_bias_power``.
    user_profile_noise: when set, the logs carry an observed ``user_profile``
      column (user tower): the user's true preference vector plus Gaussian noise
      of this per-coordinate std, fixed per user, like the rich user features of
      the paper's datasets. None (default) leaves the logs id-only.

    long_view: whether to generate the second task (a long view needs a click).
    long_view_base: intercept of the long-view-given-click logit.
    long_view_business_offsets: per-line offset of that logit.
    long_view_preference_weight: weight of the preference affinity in it, which
      correlates long views with clicks beyond the click itself.
    long_view_quality_sigma: std of an item quality that only long views see.

    num_requests: requests in the pointwise logs (rows = requests x impressions).
    candidates_per_request: candidates retrieved per logged request.
    impressions_per_request: positions shown per logged request.
    random_fraction: share of logged requests served by random exposure
      (uniform items from the whole catalogue in random order).
    retrieval_interest_mix: share of candidates retrieved from the user's
      interest categories; the rest follow global popularity, with
      ``retrieval_uniform_mix`` of all candidates uniform over the catalogue.
    retrieval_uniform_mix: see above.
    logging_noise: std of the Gaussian noise of the logging policy's score.
    logging_popularity_weight: extra weight on popularity in the logging score
      (a popularity-biased production ranker).
    chunk_requests: requests per generated chunk; bounds memory.

    num_list_requests: requests in the reranking benchmark.
    list_candidates: candidates per reranking request (n).
    list_min_candidates: fewest valid candidates; lists with fewer than n are
      padded and masked. None means every list is full.
    ranker_noise: std of the noise of the initial (imperfect) ranker's scores.
    ranker_popularity_weight: popularity bias of the initial ranker.
    repeat_decay: each earlier item of the same category in a final list
      multiplies an item's contribution to the list utility by this factor.
  """

  seed: int = 0

  num_users: int = 2000
  trie_depth: int = 3
  trie_branching: int = 4
  embedding_dim: int = 16
  level_scale_decay: float = 0.7
  user_noise_scale: float = 0.4

  num_categories: int = 20
  category_size_skew: float = 0.5
  main_interest_weight: float = 0.5
  num_secondary_interests: int = 2
  secondary_interest_weight: float = 0.3
  cluster_interest_prob: float = 0.8
  activity_sigma: float = 0.8
  history_length: int = 50

  num_items: int = 5000
  business_lines: tuple[str, ...] = ("article", "short_video", "live", "ad")
  business_shares: tuple[float, ...] = (0.3, 0.4, 0.15, 0.15)
  business_click_offsets: tuple[float, ...] = (-0.2, 0.2, -0.3, -0.8)
  business_values: tuple[float, ...] = (1.0, 1.0, 1.5, 3.0)
  business_value_sigma: float = 0.3
  popularity_sigma: float = 1.0
  category_embedding_scale: float = 1.0
  item_noise_scale: float = 0.7

  base_logit: float = -1.5
  preference_weight: float = 1.0
  category_weight: float = 0.5
  popularity_weight: float = 0.3
  position_bias_power: float = 0.8
  user_profile_noise: float | None = None

  long_view: bool = True
  long_view_base: float = -0.5
  long_view_business_offsets: tuple[float, ...] = (0.3, 0.5, 0.0, -1.0)
  long_view_preference_weight: float = 0.8
  long_view_quality_sigma: float = 0.5

  num_requests: int = 20000
  candidates_per_request: int = 50
  impressions_per_request: int = 10
  random_fraction: float = 0.05
  retrieval_interest_mix: float = 0.6
  retrieval_uniform_mix: float = 0.1
  logging_noise: float = 1.0
  logging_popularity_weight: float = 0.5
  chunk_requests: int = 4096

  num_list_requests: int = 2000
  list_candidates: int = 50
  list_min_candidates: int | None = None
  ranker_noise: float = 0.7
  ranker_popularity_weight: float = 0.3
  repeat_decay: float = 0.5

  def __post_init__(self):
    for name in ("business_lines", "business_shares", "business_click_offsets",
                 "business_values", "long_view_business_offsets"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    positive_ints = ("num_users", "trie_depth", "trie_branching", "embedding_dim", "num_categories",
                     "num_items", "candidates_per_request", "impressions_per_request",
                     "chunk_requests", "list_candidates")
    for name in positive_ints:
      if int(getattr(self, name)) < 1:
        raise ValueError(f"SimulatorConfig.{name} must be >= 1, got {getattr(self, name)}")
    for name in ("num_requests", "num_list_requests", "history_length", "num_secondary_interests"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"SimulatorConfig.{name} must be >= 0, got {getattr(self, name)}")
    num_lines = len(self.business_lines)
    for name in ("business_shares", "business_click_offsets", "business_values",
                 "long_view_business_offsets"):
      if len(getattr(self, name)) != num_lines:
        raise ValueError(f"SimulatorConfig.{name} has {len(getattr(self, name))} entries but there "
                         f"are {num_lines} business lines {self.business_lines}")
    shares = np.asarray(self.business_shares, np.float64)
    if np.any(shares < 0) or shares.sum() <= 0:
      raise ValueError(f"business_shares must be non-negative with a positive sum, got {shares}")
    if self.num_items < self.num_categories:
      raise ValueError("num_items must be at least num_categories (every category gets an item)")
    if self.num_secondary_interests >= self.num_categories:
      raise ValueError("num_secondary_interests must be smaller than num_categories")
    if (self.main_interest_weight < 0 or self.secondary_interest_weight < 0
        or self.main_interest_weight + self.secondary_interest_weight > 1):
      raise ValueError("interest weights must be non-negative and sum to at most 1")
    for name in ("cluster_interest_prob", "random_fraction", "retrieval_interest_mix",
                 "retrieval_uniform_mix"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"SimulatorConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
    if self.retrieval_interest_mix + self.retrieval_uniform_mix > 1.0:
      raise ValueError("retrieval_interest_mix + retrieval_uniform_mix must be at most 1")
    if not 0.0 < self.repeat_decay <= 1.0:
      raise ValueError(f"repeat_decay must lie in (0, 1], got {self.repeat_decay}")
    if self.impressions_per_request > self.candidates_per_request:
      raise ValueError("impressions_per_request cannot exceed candidates_per_request")
    # Candidates are distinct items; a catalogue at least twice the list keeps
    # duplicate-free retrieval cheap.
    if 2 * max(self.candidates_per_request, self.list_candidates) > self.num_items:
      raise ValueError("num_items must be at least twice the number of candidates per request")
    minimum = self.list_min_candidates
    if minimum is not None and not 1 <= minimum <= self.list_candidates:
      raise ValueError("list_min_candidates must lie in [1, list_candidates]")

  @property
  def num_business_lines(self) -> int:
    return len(self.business_lines)

  @property
  def num_leaves(self) -> int:
    """Leaf clusters of the user trie, ``trie_branching ** trie_depth``."""
    return self.trie_branching ** self.trie_depth

  @property
  def num_rows(self) -> int:
    """Rows of the pointwise logs: one per impression."""
    return self.num_requests * self.impressions_per_request

  def position_bias(self, num_positions: int) -> np.ndarray:
    """Examination probability per 0-based position, float64 ``[num_positions]``."""
    return (np.arange(num_positions, dtype=np.float64) + 1.0) ** -self.position_bias_power

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable copy (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
