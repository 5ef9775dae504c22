"""Tests of the hierarchical recommendation simulator against its own generative model.

The checks compare generated data with independent references: closed forms of
the trie similarity, binomial confidence intervals around the configured
position bias, the sum of the true probabilities per business line, and the
list utility written out by hand. Statistical checks are family-wise at 95%
(Bonferroni over the cells tested) and also check that the interval is tight
enough to reject the obvious wrong answer, so a pass is informative.
"""

import dataclasses
import functools
import itertools
import tracemalloc
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hgrank_jax.data.sim import synthetic
from hgrank_jax.data.sim.world import GuidedInverseCdf
from hgrank_jax.data.sim.synthetic import (SimulatorConfig, build_world, concat_log_chunks,
                                       config_for_view, iter_log_chunks, iter_list_chunks,
                                       list_chunk, list_utility, log_chunk, make_dataset,
                                       make_request_lists, true_scores)


def _assert_nested_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_data_different_seed_different_data():
  config = config_for_view("tiny", seed=3)
  first, again = make_dataset(config), make_dataset(config)
  for split in ("train", "valid", "test"):
    _assert_nested_equal(first.dataset.splits[split], again.dataset.splits[split])
    _assert_nested_equal(first.truth[split], again.truth[split])
  lists, lists_again = make_request_lists(config), make_request_lists(config)
  _assert_nested_equal(lists.inputs, lists_again.inputs)
  _assert_nested_equal(lists.truth, lists_again.truth)

  other = make_dataset(dataclasses.replace(config, seed=4))
  assert not np.array_equal(first.world.user_preference, other.world.user_preference)
  assert not np.array_equal(first.dataset.splits["train"]["item_id"][:50],
                            other.dataset.splits["train"]["item_id"][:50])
  other_lists = make_request_lists(dataclasses.replace(config, seed=4))
  assert not np.array_equal(lists.inputs["item_id"], other_lists.inputs["item_id"])


def test_chunks_depend_only_on_seed_and_index():
  config = config_for_view("tiny", seed=0)
  world = build_world(config)
  forward = list(iter_log_chunks(world))
  assert len(forward) == synthetic.num_chunks(config.num_requests, config.chunk_requests) > 2
  for index in reversed(range(len(forward))):  # any order, alone
    chunk = log_chunk(world, index)
    _assert_nested_equal(chunk.columns, forward[index].columns)
    _assert_nested_equal(chunk.truth, forward[index].truth)
  # Asking for more requests appends chunks and leaves the earlier ones unchanged.
  bigger = build_world(dataclasses.replace(config, num_requests=10 * config.num_requests))
  np.testing.assert_array_equal(bigger.user_preference, world.user_preference)
  _assert_nested_equal(log_chunk(bigger, 1).columns, forward[1].columns)
  # Host sharding by stride covers each chunk exactly once.
  strided = [c.index for host in range(2) for c in iter_log_chunks(world, start=host, step=2)]
  assert sorted(strided) == list(range(len(forward)))


# ------------------------------------------------------------------- the world


def _shared_prefix_depth(paths):
  depth = np.zeros((len(paths), len(paths)), np.int64)
  still_equal = np.ones_like(depth, bool)
  for level in range(paths.shape[1]):
    still_equal &= paths[:, None, level] == paths[None, :, level]
    depth += still_equal
  return depth


def test_preference_similarity_rises_strictly_with_shared_trie_depth():
  config = SimulatorConfig(num_users=1500, seed=0)
  world = build_world(config)
  preference = world.user_preference.astype(np.float64)
  unit = preference / np.linalg.norm(preference, axis=1, keepdims=True)
  cosine = unit @ unit.T
  depth = _shared_prefix_depth(world.user_path)
  distinct_pairs = ~np.eye(config.num_users, dtype=bool)
  means = np.array([cosine[(depth == d) & distinct_pairs].mean() for d in range(config.trie_depth + 1)])
  assert np.all(np.diff(means) > 0), means
  # Closed form (ratio of expectations): shared variance over total variance.
  level_var = config.level_scale_decay ** (2 * np.arange(config.trie_depth))
  expected = np.r_[0.0, np.cumsum(level_var)] / (level_var.sum() + config.user_noise_scale ** 2)
  np.testing.assert_allclose(means, expected, atol=0.15)
  # user_cluster is the path prefix read in base K, level by level.
  k = config.trie_branching
  np.testing.assert_array_equal(world.user_cluster[:, 0], world.user_path[:, 0])
  np.testing.assert_array_equal(world.user_cluster[:, 1:],
                                world.user_cluster[:, :-1] * k + world.user_path[:, 1:])


def test_user_interests_follow_main_secondary_and_cluster_structure():
  config = SimulatorConfig(num_users=3000, seed=1)
  world = build_world(config)
  interest = world.user_interest
  np.testing.assert_allclose(interest.sum(axis=1), 1.0, rtol=1e-12)
  rows = np.arange(config.num_users)
  rest = (1 - config.main_interest_weight - config.secondary_interest_weight) / config.num_categories
  np.testing.assert_allclose(interest[rows, world.user_main_interest],
                             config.main_interest_weight + rest)
  per_secondary = config.secondary_interest_weight / config.num_secondary_interests + rest
  np.testing.assert_allclose(np.take_along_axis(interest, world.user_secondary_interests, 1),
                             per_secondary)
  # The main interest is the leaf's favourite with probability p + (1 - p) / C.
  favourite = world.leaf_favourite_category[world.user_cluster[:, -1]]
  matches = int((world.user_main_interest == favourite).sum())
  p = config.cluster_interest_prob + (1 - config.cluster_interest_prob) / config.num_categories
  assert stats.binomtest(matches, config.num_users, p).pvalue > 0.01
  # The O(1) mixture sampler draws from exactly these distributions.
  rng = np.random.default_rng(0)
  users = np.repeat(np.arange(5), 20000)
  drawn = world.sample_interest_categories(rng, users)
  for user in range(5):
    counts = np.bincount(drawn[users == user], minlength=config.num_categories)
    assert stats.chisquare(counts, 20000 * interest[user]).pvalue > 0.001


def test_guided_inverse_cdf_equals_searchsorted():
  rng = np.random.default_rng(0)
  weights = rng.lognormal(0.0, 2.0, size=5000)
  weights[[0, 7, 8, 4999]] = 0.0  # zero-weight entries must never be drawn
  sampler = GuidedInverseCdf(weights)
  boundaries = np.concatenate([sampler.cdf, np.nextafter(sampler.cdf, 0)])
  targets = np.concatenate([rng.random(100000) * sampler.total, [0.0],
                            boundaries[boundaries < sampler.total]])
  np.testing.assert_array_equal(sampler(targets), np.searchsorted(sampler.cdf, targets, side="right"))
  drawn = sampler(rng.random(200000) * sampler.total)
  assert not np.isin(drawn, [0, 7, 8, 4999]).any()


# -------------------------------------------------------------- pointwise logs


@pytest.fixture(scope="module")
def position_logs():
  """400k impressions, half of the requests random exposure."""
  config = SimulatorConfig(num_requests=40000, random_fraction=0.5, seed=7)
  world = build_world(config)
  return types.SimpleNamespace(config=config, world=world,
                               logs=concat_log_chunks(iter_log_chunks(world)))


def test_random_slice_click_rate_by_position_matches_position_bias(position_logs):
  config, logs = position_logs.config, position_logs.logs
  shown = config.impressions_per_request
  random_rows = logs.columns["is_random"] == 1
  assert abs(random_rows.mean() - config.random_fraction) < 0.02
  clicks = logs.columns["click"][random_rows].reshape(-1, shown)  # [requests, positions]
  relevance = logs.truth["relevance"][random_rows].reshape(-1, shown)
  num_requests = len(clicks)
  # Items land on positions at random, so E[click at k] = theta_k * E[relevance].
  theta = (np.arange(shown) + 1.0) ** -config.position_bias_power
  mean_relevance = relevance.mean()
  expected = theta * mean_relevance
  observed = clicks.mean(axis=0)
  # Clicks at one position are i.i.d. across requests (one row per request);
  # the reference's own noise (per-request mean relevance) is added conservatively.
  se = np.sqrt(expected * (1 - expected) / num_requests
               + theta ** 2 * relevance.mean(axis=1).var() / num_requests)
  z_crit = stats.norm.ppf(1 - 0.05 / (2 * shown))
  assert np.all(np.abs(observed - expected) < z_crit * se), (observed, expected, se)
  # Power: without position bias every position would click at mean_relevance.
  assert np.abs(observed[-1] - mean_relevance) > 10 * z_crit * se[-1]

  # The exponent fitted to log CTR vs log(k + 1) lies in its 95% interval.
  log_ctr_var = (1 - observed) / (observed * num_requests)
  design = np.stack([np.ones(shown), -np.log(np.arange(shown) + 1.0)], axis=1)
  weights = 1.0 / log_ctr_var
  cov = np.linalg.inv(design.T @ (weights[:, None] * design))
  power_hat = (cov @ design.T @ (weights * np.log(observed)))[1]
  power_se = np.sqrt(cov[1, 1])
  assert power_se < 0.05
  assert abs(power_hat - config.position_bias_power) < 1.96 * power_se, (power_hat, power_se)


def test_logging_policy_is_not_random(position_logs):
  logs, shown = position_logs.logs, position_logs.config.impressions_per_request
  logged = logs.columns["is_random"] == 0
  relevance = logs.truth["relevance"][logged].reshape(-1, shown)
  random_relevance = logs.truth["relevance"][~logged].reshape(-1, shown)
  # The policy puts more relevant items on top, and its items beat random ones.
  assert relevance[:, 0].mean() > relevance[:, -1].mean() + 0.05
  assert relevance.mean() > random_relevance.mean() + 0.05
  # Items within one request are distinct.
  items = logs.columns["item_id"].reshape(-1, shown)
  sorted_items = np.sort(items, axis=1)
  assert not np.any(sorted_items[:, 1:] == sorted_items[:, :-1])


def test_click_and_long_view_rates_match_true_probabilities_per_business(position_logs):
  config, logs = position_logs.config, position_logs.logs
  business = logs.columns["business"]
  num_lines = config.num_business_lines
  z_crit = stats.norm.ppf(1 - 0.05 / (2 * 2 * num_lines))  # two labels x lines
  for label, prob in (("click", "click_prob"), ("long_view", "long_view_prob")):
    for line in range(num_lines):
      rows = business == line
      p = logs.truth[prob][rows].astype(np.float64)
      observed = logs.columns[label][rows].sum()
      se = np.sqrt(np.sum(p * (1 - p)))
      assert abs(observed - p.sum()) < z_crit * se, (
          label, config.business_lines[line], observed, p.sum(), se)
  # Business lines differ in click rate (the configured offsets), beyond noise.
  rates = [logs.truth["click_prob"][business == b].mean() for b in range(num_lines)]
  assert np.ptp(rates) > 0.03
  # A long view needs a click; long views are positively correlated with clicks.
  assert np.all(logs.columns["long_view"] <= logs.columns["click"])
  click_prob = logs.truth["click_prob"]
  np.testing.assert_allclose(click_prob, logs.truth["relevance"] * (logs.columns["position"] + 1.0)
                             ** -config.position_bias_power, rtol=1e-5)


def test_dataset_spec_splits_and_truth_alignment():
  config = SimulatorConfig(num_users=300, num_items=1000, num_requests=3000, seed=2)
  sim = make_dataset(config)
  dataset = sim.dataset
  spec = dataset.spec
  assert (spec.user_field, spec.item_field, spec.category_field) == ("user_id", "item_id", "category")
  assert set(spec.feature_names) == {
      "user_id", "item_id", "category", "business", "position", "is_random"}
  assert spec.labels == ("click", "long_view")
  assert sum(dataset.num_rows(s) for s in ("train", "valid", "test")) == config.num_rows
  for split in ("train", "valid", "test"):
    columns, truth = dataset.splits[split], sim.truth[split]
    assert truth.keys() == {"relevance", "click_prob", "long_view_prob"}
    assert not truth.keys() & columns.keys()  # truth is never a column
    # Truth rows are aligned with data rows: recompute them from the world.
    expected = true_scores(sim.world, columns["user_id"], columns["item_id"])["relevance"]
    np.testing.assert_allclose(truth["relevance"], expected, rtol=1e-6)
    np.testing.assert_array_equal(columns["category"], sim.world.item_category[columns["item_id"]])
  # Users request in proportion to their activity.
  all_users = np.concatenate([dataset.splits[s]["user_id"] for s in ("train", "valid", "test")])
  requests = np.bincount(all_users, minlength=config.num_users) / config.impressions_per_request
  assert np.corrcoef(requests, sim.world.user_activity)[0, 1] > 0.8
  # The chronological split puts each user's earliest requests in train.
  timed = make_dataset(config, split_method="time").dataset
  last_train = np.full(config.num_users, -1)
  np.maximum.at(last_train, timed.splits["train"]["user_id"], timed.splits["train"]["request_id"])
  first_test = np.full(config.num_users, np.iinfo(np.int64).max)
  np.minimum.at(first_test, timed.splits["test"]["user_id"], timed.splits["test"]["request_id"])
  assert np.all(last_train <= first_test)


def test_config_rejects_inconsistent_fields():
  with pytest.raises(ValueError, match="business lines"):
    SimulatorConfig(business_values=(1.0, 2.0))
  with pytest.raises(ValueError, match="twice"):
    SimulatorConfig(num_items=60, candidates_per_request=50)
  with pytest.raises(ValueError, match="repeat_decay"):
    SimulatorConfig(repeat_decay=0.0)
  with pytest.raises(ValueError, match="unknown simulator view"):
    config_for_view("huge")


# ------------------------------------------------------------ reranking lists


def test_list_utility_matches_hand_computed_formula():
  relevance = np.array([0.9, 0.8, 0.6, 0.5, 0.3])
  categories = np.array([2, 2, 5, 2, 7])
  theta = np.array([1.0, 0.6, 0.45, 0.35])
  gamma = 0.5
  order = np.array([0, 1, 2, 3])  # categories 2, 2, 5, 2: repeats 0, 1, 0, 2
  by_hand = 1.0 * 0.9 + 0.6 * 0.8 * gamma + 0.45 * 0.6 + 0.35 * 0.5 * gamma ** 2
  utility_at = functools.partial(list_utility, position_bias=theta, repeat_decay=gamma)
  utility = utility_at(order, relevance, categories)
  np.testing.assert_allclose(utility, by_hand, rtol=1e-6)
  # Replacing the first repeat by a new category removes exactly its discount.
  order_diverse = np.array([0, 4, 2, 3])  # categories 2, 7, 5, 2
  diverse = 1.0 * 0.9 + 0.6 * 0.3 + 0.45 * 0.6 + 0.35 * 0.5 * gamma
  np.testing.assert_allclose(utility_at(order_diverse, relevance, categories), diverse, rtol=1e-6)
  # A repeat lowers the item's term by (1 - gamma) exactly, the configured amount.
  one_category = np.zeros(5, np.int64)
  no_repeat = utility_at(np.array([0, 1]), relevance, np.arange(5))
  repeat = utility_at(np.array([0, 1]), relevance, one_category)
  np.testing.assert_allclose(no_repeat - repeat, 0.6 * 0.8 * (1 - gamma), rtol=1e-6)
  # gamma = 1 is the additive sum; a smaller gamma lowers any list with repeats.
  additive = list_utility(order, relevance, categories, position_bias=theta, repeat_decay=1.0)
  np.testing.assert_allclose(additive, np.sum(theta * relevance[order]), rtol=1e-6)
  assert list_utility(order, relevance, categories, position_bias=theta, repeat_decay=0.3) < utility
  # Empty slots (-1) add nothing and are not earlier items; item weights multiply.
  with_gap = np.array([0, -1, 1, -1])
  np.testing.assert_allclose(
      utility_at(with_gap, relevance, categories, item_weight=np.array([2.0, 3.0, 1.0, 1.0, 1.0])),
      1.0 * 0.9 * 2.0 + 0.45 * 0.8 * 3.0 * gamma, rtol=1e-6)
  # A batch of lists, an enclosing jit and vmap give the per-list values.
  batch = np.stack([order, order_diverse])
  batched = utility_at(batch, np.tile(relevance, (2, 1)), np.tile(categories, (2, 1)))
  np.testing.assert_allclose(batched, [by_hand, diverse], rtol=1e-6)
  jitted = jax.jit(lambda o, r, c: utility_at(o, r, c))
  np.testing.assert_allclose(
      jitted(batch, np.tile(relevance, (2, 1)), np.tile(categories, (2, 1))), batched)
  mapped = jax.vmap(lambda o: utility_at(o, relevance, categories))
  np.testing.assert_allclose(mapped(jnp.asarray(batch)), batched, rtol=1e-6)
  # Differentiable in relevance: d U / d r_{o_k} = theta_k * gamma ** m_k.
  grad = jax.grad(lambda r: utility_at(order, r, categories))(jnp.asarray(relevance, jnp.float32))
  np.testing.assert_allclose(grad, [1.0, 0.6 * gamma, 0.45, 0.35 * gamma ** 2, 0.0], rtol=1e-6)


def _utility_by_loop(order, relevance, categories, theta, gamma):
  total, seen = 0.0, {}
  for position, slot in enumerate(order):
    category = categories[slot]
    total += theta[position] * relevance[slot] * gamma ** seen.get(category, 0)
    seen[category] = seen.get(category, 0) + 1
  return total


def test_request_lists_inputs_truth_and_true_utility():
  config = SimulatorConfig(num_users=500, num_items=2000, num_list_requests=300, list_candidates=30,
                           list_min_candidates=10, chunk_requests=128, seed=5)
  lists = make_request_lists(config)
  inputs, truth = lists.inputs, lists.truth
  r, n = config.num_list_requests, config.list_candidates
  assert inputs["item_embedding"].shape == (r, n, config.embedding_dim)
  assert inputs["history_category_counts"].shape == (r, config.num_categories)
  assert not inputs.keys() & truth.keys()
  where = inputs["where"]
  # Valid candidates are a prefix, between the configured bounds, sorted by initial score.
  assert np.all(where[:, :-1] >= where[:, 1:])
  assert where.sum(axis=1).min() >= config.list_min_candidates
  score_steps = np.diff(inputs["initial_score"], axis=1)
  assert np.all(score_steps[where[:, 1:]] <= 0)
  assert np.all(truth["relevance"][~where] == 0)
  items = np.where(where, inputs["item_id"], -np.arange(n) - 1)  # padding made distinct
  assert not np.any(np.sort(items, axis=1)[:, 1:] == np.sort(items, axis=1)[:, :-1])
  # The initial ranker is informative but imperfect, and noise makes it worse.
  def rank_correlation(lists):
    valid = lists.inputs["where"]
    return np.mean([stats.spearmanr(lists.inputs["initial_score"][i][valid[i]],
                                    lists.truth["relevance"][i][valid[i]])[0] for i in range(50)])
  noisy = rank_correlation(lists)
  clean = rank_correlation(make_request_lists(dataclasses.replace(config, ranker_noise=0.0,
                                                                  ranker_popularity_weight=0.0)))
  assert 0.2 < noisy < clean and clean > 0.999

  # true_utility equals a plain loop over the formula, on random final lists of length 8.
  rng = np.random.default_rng(0)
  order = np.argsort(rng.random((r, n)) + ~where, axis=1)[:, :8]  # valid slots first, shuffled
  order = np.where(np.take_along_axis(where, order, 1), order, -1)
  utility = lists.true_utility(order)
  value = lists.true_utility(order, weight="value")
  theta = (np.arange(n) + 1.0) ** -config.position_bias_power
  for i in range(0, r, 37):
    slots = [s for s in order[i] if s >= 0]
    valid_positions = [k for k, s in enumerate(order[i]) if s >= 0]
    expected = _utility_by_loop(slots, truth["relevance"][i], inputs["category"][i],
                                theta[valid_positions], config.repeat_decay)
    np.testing.assert_allclose(utility[i], expected, rtol=1e-5)
    weighted = _utility_by_loop(slots, truth["relevance"][i] * inputs["item_value"][i],
                                inputs["category"][i], theta[valid_positions], config.repeat_decay)
    np.testing.assert_allclose(value[i], weighted, rtol=1e-5)
  # The chunk generator returns the same lists piece by piece.
  second = list_chunk(build_world(config), 1)
  np.testing.assert_array_equal(second.inputs["item_id"], inputs["item_id"][128:256])


# -------------------------------------------------------------- laziness/memory


def test_chunked_generation_is_lazy_and_memory_bounded():
  # 10^9 requests = 10^10 rows, hundreds of GB if materialised; only chunks are made.
  config = SimulatorConfig(num_requests=10 ** 9, chunk_requests=2048, seed=0)
  world = build_world(config)
  tracemalloc.start()
  try:
    chunks = iter_log_chunks(world)
    _, peak_before = tracemalloc.get_traced_memory()
    assert peak_before < 1 << 20  # creating the iterator generates nothing
    first_three = []
    for chunk in itertools.islice(chunks, 3):
      first_three.append(chunk.index)
      row_bytes = sum(v.nbytes for part in (chunk.columns, chunk.truth) for v in part.values())
      assert chunk.num_rows == config.chunk_requests * config.impressions_per_request
      del chunk  # a writer keeps nothing between chunks
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert first_three == [0, 1, 2]
  # Peak is a small multiple of one chunk's output, independent of num_requests.
  assert peak < 40 * row_bytes, (peak, row_bytes)
  assert peak < 64 << 20
  np.testing.assert_array_equal(log_chunk(world, 2).columns["item_id"][:5],
                                log_chunk(world, 2).columns["item_id"][:5])
  lists = next(iter_list_chunks(dataclasses.replace(config, num_list_requests=10 ** 8)))
  assert lists.num_requests == config.chunk_requests


def test_views_give_the_documented_sizes():
  tiny = config_for_view("tiny")
  assert 100 <= tiny.num_rows <= 1000
  assert config_for_view("large").num_rows >= 10 ** 7
  dataset = synthetic.load("tiny", seed=1)
  assert dataset.name == "synthetic:tiny"
  assert dataset.info["config"]["seed"] == 1
  # The second task is optional: without it there is one label and no long-view truth.
  clicks_only = make_dataset(config_for_view("tiny", long_view=False))
  assert clicks_only.dataset.spec.labels == ("click",)
  assert "long_view" not in clicks_only.dataset.splits["train"]
  assert "long_view_prob" not in clicks_only.truth["train"]


def test_user_profile_is_noisy_preference_fixed_per_user_and_off_by_default():
  from hgrank_jax.data.sim import synthetic  # pylint: disable=g-import-not-at-top
  plain = synthetic.make_dataset(synthetic.config_for_view("tiny"))
  assert "user_profile" not in plain.dataset.split("train") and not plain.dataset.spec.numeric
  noise = 0.5
  logs = synthetic.make_dataset(synthetic.config_for_view("tiny", user_profile_noise=noise))
  train = logs.dataset.split("train")
  # The option adds a column and changes nothing else about the logs.
  for name, column in plain.dataset.split("train").items():
    np.testing.assert_array_equal(train[name], column)
  assert logs.dataset.spec.numeric[0].tower == "user"
  profiles, users = train["user_profile"], train["user_id"]
  for user in np.unique(users)[:10]:
    rows = profiles[users == user]
    assert np.all(rows == rows[0])  # one observed profile per user
  first = np.unique(users, return_index=True)[1]
  residual = profiles[first] - logs.world.user_preference[users[first]]
  assert abs(residual.std() - noise) < 0.1 and abs(residual.mean()) < 0.1
