"""The simulated world: users on a trie of clusters, items, and the true click model.

:func:`build_world` draws, from ``config.seed`` alone, everything that stays
fixed while requests are generated:

* users, each placed in a leaf of a trie with ``trie_depth`` levels and
  ``trie_branching`` children per node. A preference vector is the sum of one
  random vector per trie node on the user's path plus individual noise, so users
  sharing a longer prefix share more of their preference. Each user also has a
  category-interest distribution (one main interest, usually their leaf's
  favourite category, a few secondary ones and a uniform remainder), an activity
  level and an observed category history;
* items with a category, a business line, a latent popularity, an embedding
  built around a per-category centre, a per-click value and a quality that only
  the second task sees.

:func:`true_scores` is the ground truth that no model may read: the probability
that a user clicks an item once they examine it (``relevance``), and the
probability of a long view given a click. Multiplying ``relevance`` by the
position bias gives the click probability at a position.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hgrank_jax.data.sim.config import SimulatorConfig

# Seed-sequence stream ids: the world and each kind of chunk draw from
# independent streams, so adding requests never changes the world.
WORLD_STREAM = 0
LOG_STREAM = 1
PROFILE_STREAM = 2  # the observed user profiles' noise (config.user_profile_noise)
LIST_STREAM = 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|, unlike 1 / (1 + exp(-x))


class GuidedInverseCdf:
  """Inverse-CDF sampling with a guide table: the index ``searchsorted`` would give, faster.

  A binary search over a large CDF with random targets misses the cache at every
  step. The guide table stores, for ``4 * len(cdf)`` equal slices of the total
  mass, the first index whose cumulative weight exceeds the slice start; a draw
  starts there and steps forward a few entries (Chen and Asau's cutpoint method).
  The result equals ``np.searchsorted(cdf, targets, side="right")``.
  """

  def __init__(self, weights: np.ndarray):
    self.cdf = np.cumsum(np.asarray(weights, np.float64))
    self.total = float(self.cdf[-1])
    self._slices = 4 * len(self.cdf)
    starts = np.arange(self._slices) * (self.total / self._slices)
    self._guide = np.searchsorted(self.cdf, starts, side="right")

  def __call__(self, targets: np.ndarray) -> np.ndarray:
    """Indices ``i`` with ``cdf[i-1] <= t < cdf[i]`` for ``targets`` in ``[0, total)``."""
    targets = np.asarray(targets, np.float64)
    last = len(self.cdf) - 1
    slice_index = (targets * (self._slices / self.total)).astype(np.int64)
    # One slice back guards against rounding in the slice index.
    index = self._guide[np.clip(slice_index - 1, 0, self._slices - 1)]
    index = np.minimum(index, last)
    behind = np.nonzero((self.cdf[index] <= targets) & (index < last))[0]
    while behind.size:  # a handful of rounds: slices hold ~1/4 entry on average
      index[behind] += 1
      step = index[behind]
      behind = behind[(self.cdf[step] <= targets[behind]) & (step < last)]
    return index


@dataclasses.dataclass(frozen=True, eq=False)
class SimWorld:
  """Users and items of one simulated world (all numpy arrays).

  Attributes:
    config: the configuration it was built from.
    node_vectors: per trie level l, float32 ``[K**(l+1), d]``; row j is the
      vector of the level-l node whose prefix code (base K) is j.
    user_path: int32 ``[U, L]``, the child index chosen at each level (the
      user's true hierarchical code).
    user_cluster: int32 ``[U, L]``, the id of the node at each level, i.e. the
      prefix ``user_path[:, :l+1]`` read as a base-K number.
    user_preference: float32 ``[U, d]``.
    user_interest: float64 ``[U, C]``, rows sum to 1.
    user_main_interest: int32 ``[U]``.
    user_secondary_interests: int32 ``[U, S]``.
    user_activity: float64 ``[U]``, mean about 1.
    user_history_counts: int32 ``[U, C]``, observed category counts of past clicks.
    leaf_favourite_category: int32 ``[K**L]``.
    category_centres: float32 ``[C, d]``.
    item_category: int32 ``[I]``.
    item_business: int32 ``[I]``.
    item_log_popularity: float64 ``[I]``, standardised (mean 0, std 1 in law).
    item_popularity: float64 ``[I]``, traffic share, sums to 1.
    item_embedding: float32 ``[I, d]``.
    item_value: float32 ``[I]``, value of a click (revenue for ads).
    item_quality: float32 ``[I]``, enters only the long-view probability.
    affinity_scale: divisor that gives the preference affinity unit variance.
  """

  config: SimulatorConfig
  node_vectors: tuple[np.ndarray, ...]
  user_path: np.ndarray
  user_cluster: np.ndarray
  user_preference: np.ndarray
  user_interest: np.ndarray
  user_main_interest: np.ndarray
  user_secondary_interests: np.ndarray
  user_activity: np.ndarray
  user_history_counts: np.ndarray
  leaf_favourite_category: np.ndarray
  category_centres: np.ndarray
  item_category: np.ndarray
  item_business: np.ndarray
  item_log_popularity: np.ndarray
  item_popularity: np.ndarray
  item_embedding: np.ndarray
  item_value: np.ndarray
  item_quality: np.ndarray
  affinity_scale: float
  # Samplers (derived from the fields above, not part of the model).
  _activity_sampler: GuidedInverseCdf = dataclasses.field(repr=False)
  _items_by_category: np.ndarray = dataclasses.field(repr=False)
  _category_start: np.ndarray = dataclasses.field(repr=False)
  _popularity_sampler: GuidedInverseCdf = dataclasses.field(repr=False)

  @property
  def num_users(self) -> int:
    return len(self.user_activity)

  @property
  def num_items(self) -> int:
    return len(self.item_category)

  def sample_users(self, rng: np.random.Generator, size) -> np.ndarray:
    """Users in proportion to activity, int32 of shape ``size``."""
    sampler = self._activity_sampler
    return sampler(rng.random(size) * sampler.total).astype(np.int32)

  def sample_interest_categories(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
    """One category per entry of ``users`` from that user's interest distribution.

    The interest distribution is a mixture (main interest, secondary interests,
    uniform remainder), so drawing the mixture component first is exact and
    costs O(1) per draw instead of a search through a CDF.
    """
    cfg = self.config
    c, num_secondary = cfg.num_categories, cfg.num_secondary_interests
    secondary_mass = cfg.secondary_interest_weight if num_secondary else 0.0
    component = rng.random(users.shape)
    uniform = rng.integers(0, c, size=users.shape, dtype=np.int32)
    categories = np.where(component < cfg.main_interest_weight, self.user_main_interest[users], uniform)
    if num_secondary:
      pick = rng.integers(0, num_secondary, size=users.shape)
      is_secondary = ((component >= cfg.main_interest_weight)
                      & (component < cfg.main_interest_weight + secondary_mass))
      categories = np.where(is_secondary, self.user_secondary_interests[users, pick], categories)
    return categories.astype(np.int32)

  def sample_items_in_categories(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
    """One item per entry of ``categories``, in proportion to popularity within it."""
    # Items are laid out category by category, so a category's items own one
    # interval of the cumulative popularity; draw a target inside it.
    start = self._category_start[categories]
    end = self._category_start[categories + 1]
    cdf = self._popularity_sampler.cdf
    low = np.where(start > 0, cdf[np.maximum(start - 1, 0)], 0.0)
    targets = low + rng.random(categories.shape) * (cdf[end - 1] - low)
    index = np.clip(self._popularity_sampler(targets), start, end - 1)
    return self._items_by_category[index]

  def sample_popular_items(self, rng: np.random.Generator, size) -> np.ndarray:
    """Items in proportion to global popularity."""
    sampler = self._popularity_sampler
    return self._items_by_category[sampler(rng.random(size) * sampler.total)]


def _user_clusters(paths: np.ndarray, branching: int) -> np.ndarray:
  """Node id at each level: the prefix of ``paths`` read as a base-``branching`` number."""
  clusters = np.zeros_like(paths)
  running = np.zeros(len(paths), np.int64)
  for level in range(paths.shape[1]):  # a loop over trie levels (a handful), not rows
    running = running * branching + paths[:, level]
    clusters[:, level] = running
  return clusters


def build_world(config: SimulatorConfig) -> SimWorld:
  """Draws users and items for ``config`` (deterministic given ``config.seed``).

  Returns:
    A :class:`SimWorld`. Cost is O((U + I) * (d + C)); nothing depends on the
    number of requests.
  """
  cfg = config
  rng = np.random.default_rng([cfg.seed, WORLD_STREAM])
  num_levels, branching, d, c = cfg.trie_depth, cfg.trie_branching, cfg.embedding_dim, cfg.num_categories

  # Users: a leaf per user, preference = sum of node vectors on the path + noise.
  level_scales = cfg.level_scale_decay ** np.arange(num_levels)
  node_vectors = tuple(
      (level_scales[l] * rng.standard_normal((branching ** (l + 1), d))).astype(np.float32)
      for l in range(num_levels))
  paths = rng.integers(0, branching, size=(cfg.num_users, num_levels)).astype(np.int32)
  clusters = _user_clusters(paths, branching).astype(np.int32)
  preference = cfg.user_noise_scale * rng.standard_normal((cfg.num_users, d))
  for level in range(num_levels):
    preference = preference + node_vectors[level][clusters[:, level]]
  preference = preference.astype(np.float32)

  # Category interests: main (usually the leaf's favourite), secondary, uniform rest.
  leaf_favourite = rng.integers(0, c, size=cfg.num_leaves).astype(np.int32)
  from_cluster = rng.random(cfg.num_users) < cfg.cluster_interest_prob
  main = np.where(from_cluster, leaf_favourite[clusters[:, -1]],
                  rng.integers(0, c, size=cfg.num_users)).astype(np.int32)
  keys = rng.random((cfg.num_users, c))
  keys[np.arange(cfg.num_users), main] = np.inf  # the main interest is never also secondary
  secondary = np.argsort(keys, axis=1)[:, :cfg.num_secondary_interests].astype(np.int32)
  secondary_mass = cfg.secondary_interest_weight if cfg.num_secondary_interests else 0.0
  interest = np.full((cfg.num_users, c), (1.0 - cfg.main_interest_weight - secondary_mass) / c)
  interest[np.arange(cfg.num_users), main] += cfg.main_interest_weight
  if cfg.num_secondary_interests:
    np.put_along_axis(interest, secondary,
                      np.take_along_axis(interest, secondary, axis=1)
                      + secondary_mass / cfg.num_secondary_interests, axis=1)
  activity = rng.lognormal(-0.5 * cfg.activity_sigma ** 2, cfg.activity_sigma, size=cfg.num_users)
  history = rng.multinomial(cfg.history_length, interest).astype(np.int32)

  # Items: every category gets at least one item, the rest follow Zipf shares.
  category_shares = (np.arange(c) + 1.0) ** -cfg.category_size_skew
  category_shares /= category_shares.sum()
  item_category = np.concatenate(
      [np.arange(c), rng.choice(c, size=cfg.num_items - c, p=category_shares)])
  item_category = rng.permutation(item_category).astype(np.int32)
  business_shares = np.asarray(cfg.business_shares, np.float64)
  item_business = rng.choice(cfg.num_business_lines, size=cfg.num_items,
                             p=business_shares / business_shares.sum()).astype(np.int32)
  raw_log_popularity = cfg.popularity_sigma * rng.standard_normal(cfg.num_items)
  popularity = np.exp(raw_log_popularity - raw_log_popularity.max())
  popularity /= popularity.sum()
  if cfg.popularity_sigma > 0:
    log_popularity = raw_log_popularity / cfg.popularity_sigma
  else:
    log_popularity = np.zeros(cfg.num_items)
  centres = rng.standard_normal((c, d)).astype(np.float32)
  embedding = (cfg.category_embedding_scale * centres[item_category]
               + cfg.item_noise_scale * rng.standard_normal((cfg.num_items, d))).astype(np.float32)
  sigma = cfg.business_value_sigma
  value = (np.asarray(cfg.business_values)[item_business]
           * rng.lognormal(-0.5 * sigma ** 2, sigma, size=cfg.num_items)).astype(np.float32)
  quality = (cfg.long_view_quality_sigma * rng.standard_normal(cfg.num_items)).astype(np.float32)

  # E<p, e>^2 = d * E[p_j^2] * E[e_j^2] for independent coordinates.
  preference_var = float(np.sum(level_scales ** 2) + cfg.user_noise_scale ** 2)
  embedding_var = cfg.category_embedding_scale ** 2 + cfg.item_noise_scale ** 2
  affinity_scale = float(np.sqrt(d * preference_var * embedding_var)) or 1.0

  items_by_category = np.argsort(item_category, kind="stable").astype(np.int32)
  category_start = np.searchsorted(item_category[items_by_category], np.arange(c + 1)).astype(np.int64)
  return SimWorld(
      config=cfg, node_vectors=node_vectors, user_path=paths, user_cluster=clusters,
      user_preference=preference, user_interest=interest, user_main_interest=main,
      user_secondary_interests=secondary, user_activity=activity, user_history_counts=history,
      leaf_favourite_category=leaf_favourite, category_centres=centres,
      item_category=item_category, item_business=item_business,
      item_log_popularity=log_popularity, item_popularity=popularity, item_embedding=embedding,
      item_value=value, item_quality=quality, affinity_scale=affinity_scale,
      _activity_sampler=GuidedInverseCdf(activity), _items_by_category=items_by_category,
      _category_start=category_start,
      _popularity_sampler=GuidedInverseCdf(popularity[items_by_category]))


def true_scores(world: SimWorld, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
  """Ground-truth probabilities for user-item pairs (never a model input).

  With ``a = <preference_u, embedding_i> / affinity_scale`` (unit variance):

  * click logit ``z = base + offset[business_i] + w_pref * a
    + w_cat * log(C * interest_u[category_i]) + w_pop * log_popularity_i``;
  * ``relevance = sigmoid(z)``, the click probability once examined; at
    0-based position k the click probability is ``relevance * (k + 1) ** -power``;
  * ``long_view_given_click = sigmoid(lv_base + lv_offset[business_i]
    + lv_w * a + quality_i)``.

  Args:
    world: the world.
    users: int array broadcastable against ``items`` (e.g. ``[R, 1]``).
    items: int array, e.g. ``[R, n]``.

  Returns:
    dict of float32 arrays of the broadcast shape: "logit", "relevance",
    "affinity", "long_view_given_click".
  """
  cfg = world.config
  users = np.asarray(users)
  items = np.asarray(items)
  affinity = np.einsum("...d,...d->...", world.user_preference[users], world.item_embedding[items],
                       optimize=False) / np.float32(world.affinity_scale)
  business = world.item_business[items]
  interest = world.user_interest[users, world.item_category[items]]
  logit = (cfg.base_logit + np.asarray(cfg.business_click_offsets)[business]
           + cfg.preference_weight * affinity
           + cfg.category_weight * np.log(cfg.num_categories * interest)
           + cfg.popularity_weight * world.item_log_popularity[items])
  long_view_logit = (cfg.long_view_base + np.asarray(cfg.long_view_business_offsets)[business]
                     + cfg.long_view_preference_weight * affinity + world.item_quality[items])
  return {
      "logit": logit.astype(np.float32),
      "relevance": _sigmoid(logit).astype(np.float32),
      "affinity": affinity.astype(np.float32),
      "long_view_given_click": _sigmoid(long_view_logit).astype(np.float32),
  }


def observed_user_profiles(world: SimWorld) -> np.ndarray:
  """``[U, d]`` float32: preference + N(0, user_profile_noise^2), fixed per user.

  Drawn from its own stream ``(seed, PROFILE_STREAM)``, so worlds and logs
  without profiles are unchanged by the option.
  """
  cfg = world.config
  if cfg.user_profile_noise is None:
    raise ValueError("observed_user_profiles: config.user_profile_noise is None")
  rng = np.random.default_rng([cfg.seed, PROFILE_STREAM])
  noise = cfg.user_profile_noise * rng.standard_normal(world.user_preference.shape)
  return (world.user_preference + noise).astype(np.float32)
