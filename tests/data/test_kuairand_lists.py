"""KuaiRand candidate lists per user and day, against a plain-Python reference.

The logs are written in the official format over the real Pure feature sample
(tests/data/kuairand_daily.py); the reference recomputes every list with dict
loops over the reader's rows, following the documented rules.
"""

import collections
import math

import numpy as np
import pytest

from hgrank_jax.data.official import kuairand
from hgrank_jax.data.official import kuairand_lists
from tests.data.kuairand_daily import write_daily_logs


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
  directory = tmp_path_factory.mktemp("kuairand_daily")
  write_daily_logs(directory)
  spec, columns, _ = kuairand.read(directory, "pure")
  return directory, spec, columns


def _reference(columns, num_candidates, min_candidates, label, strength):
  """{(user, date): {video: (initial score, label, category)}} and histories, by dict loops."""
  rows = [{name: columns[name][i] for name in ("user_id", "video_id", "date", "category",
                                               "is_rand", label)}
          for i in range(len(columns["user_id"]))]
  lists, histories = {}, {}
  days = collections.defaultdict(dict)
  for row in rows:
    if row["is_rand"] == 0:
      key = (int(row["user_id"]), int(row["date"]))
      video = int(row["video_id"])
      days[key][video] = max(days[key].get(video, 0.0), float(row[label]))
  for (user, date), labels in days.items():
    if not min_candidates <= len(labels) <= num_candidates:
      continue  # the reference covers untruncated days only
    if not 0 < sum(labels.values()) < len(labels):
      continue
    earlier = [r for r in rows if r["date"] < date]
    prior = (sum(float(r[label]) for r in earlier) / len(earlier)) if earlier else 0.5
    entry = {}
    for video, value in labels.items():
      seen = [float(r[label]) for r in earlier if r["video_id"] == video]
      rate = (sum(seen) + strength * prior) / (len(seen) + strength)
      category = next(int(r["category"]) for r in rows if r["video_id"] == video)
      entry[video] = (math.log(rate / (1 - rate)), value, category)
    lists[(user, date)] = entry
    history = collections.Counter()
    for r in earlier:
      if r["user_id"] == user and r[label] > 0:
        history[int(r["category"])] += 1
    histories[(user, date)] = history
  return lists, histories


@pytest.mark.parametrize("label", ["is_click", "long_view"])
def test_lists_match_a_plain_python_reference(logs, label):
  directory, spec, columns = logs
  n = 60  # longer than any day of the fixture: nothing is truncated
  lists, info = kuairand_lists.load(directory, "pure", num_candidates=n, min_candidates=12,
                                    label=label)
  expected, histories = _reference(columns, n, 12, label, strength=20.0)
  x, truth = lists.inputs, lists.truth
  got = {(int(u), int(d)): r for r, (u, d) in enumerate(zip(x["user_id"], x["date"]))}
  assert set(got) == set(expected) and info["lists"] == len(expected) > 20
  assert list(zip(x["date"], x["user_id"])) == sorted(zip(x["date"], x["user_id"]))
  num_categories = spec.categorical_feature("category").vocab_size
  for key, r in got.items():
    valid = x["where"][r]
    count = int(valid.sum())
    assert valid[:count].all() and not valid[count:].any()
    videos = x["item_id"][r, :count].tolist()
    assert sorted(videos) == sorted(expected[key])
    for slot, video in enumerate(videos):
      score, value, category = expected[key][video]
      np.testing.assert_allclose(x["initial_score"][r, slot], score, rtol=1e-5, atol=1e-5)
      assert truth["relevance"][r, slot] == value and x["category"][r, slot] == category
    assert np.all(np.diff(x["initial_score"][r, :count]) <= 0)
    history = np.zeros(num_categories, int)
    for category, clicks in histories[key].items():
      history[category] = clicks
    np.testing.assert_array_equal(x["history_category_counts"][r], history)
  np.testing.assert_allclose(truth["position_bias"], 1 / np.log2(2 + np.arange(n)))


def test_embeddings_and_business_follow_the_video_features(logs):
  directory, spec, _ = logs
  lists, info = kuairand_lists.load(directory, "pure", num_candidates=60, min_candidates=12)
  import csv  # pylint: disable=g-import-not-at-top
  with open(directory / "video_features_basic_pure.csv", newline="") as f:
    videos = {int(r["video_id"]): r for r in csv.DictReader(f)}
  types = sorted({r["video_type"] for r in videos.values()} - {"UNKNOWN", ""})
  x = lists.inputs
  for r, slot in zip(*np.nonzero(x["where"])):
    row = videos[int(x["item_id"][r, slot])]
    tags = [t for t in row["tag"].split(",") if t]
    expected = np.zeros(len(info["tags"]))
    for tag in tags:
      expected[info["tags"].index(tag)] = 1 / math.sqrt(len(tags))
    np.testing.assert_allclose(x["item_embedding"][r, slot], expected, rtol=1e-6)
    kind = row["video_type"]
    assert x["business"][r, slot] == (types.index(kind) + 1 if kind in types else 0)
  assert info["num_business"] == spec.categorical_feature("video_type").vocab_size
  assert (x["item_value"] == x["where"]).all()


def test_truncated_days_keep_a_seeded_subset(logs):
  directory, _, columns = logs
  first, _ = kuairand_lists.load(directory, "pure", num_candidates=16, min_candidates=8, seed=3)
  again, _ = kuairand_lists.load(directory, "pure", num_candidates=16, min_candidates=8, seed=3)
  other, info = kuairand_lists.load(directory, "pure", num_candidates=16, min_candidates=8, seed=4)
  np.testing.assert_array_equal(first.inputs["item_id"], again.inputs["item_id"])
  assert info["truncated_to_num_candidates"] > 0
  assert not np.array_equal(first.inputs["item_id"], other.inputs["item_id"])
  x = first.inputs
  for r in range(len(x["user_id"])):
    day = (columns["user_id"] == x["user_id"][r]) & (columns["date"] == x["date"][r]) & (
        columns["is_rand"] == 0)
    chosen = x["item_id"][r][x["where"][r]]
    assert len(set(chosen)) == len(chosen) == min(16, len(set(columns["video_id"][day])))
    assert set(chosen) <= set(columns["video_id"][day])


def test_inputs_ignore_the_labels_of_their_own_date(logs):
  _, spec, columns = logs
  videos = np.unique(columns["video_id"])
  embedding = np.eye(len(videos), dtype=np.float32)
  settings = dict(video_ids=videos, video_embedding=embedding,
                  num_categories=spec.categorical_feature("category").vocab_size, num_candidates=60,
                  min_candidates=12)
  base, _ = kuairand_lists.build_request_lists(columns, **settings)
  last = columns["date"] == columns["date"].max()
  flipped = dict(columns, is_click=np.where(last, 1.0 - columns["is_click"],
                                            columns["is_click"]).astype(np.float32))
  changed, _ = kuairand_lists.build_request_lists(flipped, **settings)
  def by_key(lists):
    return {(int(u), int(d)): r for r, (u, d) in
            enumerate(zip(lists.inputs["user_id"], lists.inputs["date"]))}
  a, b = by_key(base), by_key(changed)
  shared = [key for key in set(a) & set(b) if key[1] == columns["date"].max()]
  assert len(shared) >= 3
  for key in shared:
    for name in ("item_id", "initial_score", "history_category_counts", "category"):
      np.testing.assert_array_equal(base.inputs[name][a[key]], changed.inputs[name][b[key]])
    # The labels did change: a video is positive if any of its flipped exposures is.
    for slot in np.flatnonzero(base.inputs["where"][a[key]]):
      rows = ((flipped["user_id"] == key[0]) & (flipped["date"] == key[1]) & (
          flipped["video_id"] == base.inputs["item_id"][a[key], slot]) & (flipped["is_rand"] == 0))
      assert changed.truth["relevance"][b[key], slot] == flipped["is_click"][rows].max()
  assert any((base.truth["relevance"][a[key]] != changed.truth["relevance"][b[key]]).any()
             for key in shared)


def test_date_splits():
  dates = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5])
  assert kuairand_lists.date_splits(dates, 1, 2) == (slice(0, 3), slice(3, 6), slice(6, 9))
  with pytest.raises(ValueError, match="5 dates with lists"):
    kuairand_lists.date_splits(dates, 2, 3)
  with pytest.raises(ValueError, match="sorted by date"):
    kuairand_lists.date_splits(dates[::-1], 1, 1)


def test_bad_settings_raise_clear_errors(logs):
  directory, _, columns = logs
  with pytest.raises(ValueError, match="label must be one of"):
    kuairand_lists.load(directory, "pure", label="is_follow")
  with pytest.raises(ValueError, match="min_candidates <= num_candidates"):
    kuairand_lists.load(directory, "pure", num_candidates=10, min_candidates=20)
  with pytest.raises(ValueError, match="no user-day has >= 500"):
    kuairand_lists.load(directory, "pure", num_candidates=500, min_candidates=500)
  with pytest.raises(ValueError, match="initial_scores must have shape"):
    kuairand_lists.build_request_lists(columns, video_ids=np.arange(3),
                                       video_embedding=np.zeros((3, 1)), num_categories=100,
                                       initial_scores=np.zeros(3))
  with pytest.raises(FileNotFoundError, match="log_standard"):
    kuairand_lists.load(directory / "missing", "pure")


def test_given_scores_order_the_candidates(logs):
  _, spec, columns = logs
  videos = np.unique(columns["video_id"])
  scores = -columns["video_id"].astype(np.float64)  # lower video ids first
  lists, info = kuairand_lists.build_request_lists(
      columns, video_ids=videos, video_embedding=np.zeros((len(videos), 2), np.float32),
      num_categories=spec.categorical_feature("category").vocab_size, num_candidates=60, min_candidates=12,
      initial_scores=scores)
  x = lists.inputs
  for r in range(len(x["user_id"])):
    ids = x["item_id"][r][x["where"][r]]
    assert np.all(np.diff(ids) > 0)
  assert info["initial_score"] == "given"
