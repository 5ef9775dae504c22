"""split_rows on synthetic users, checked row by row in plain Python."""

import collections

import numpy as np
import pytest

from hgrank_jax.data.splits import split_rows


def _data(seed=0, rows=6000, users=500):
  rng = np.random.default_rng(seed)
  user = rng.integers(0, users, rows) * 7 - 3  # sparse, negative ids allowed
  label = (rng.random(rows) < rng.random(users)[(user + 3) // 7]).astype(np.float32)
  return user, label


def test_random_split_partitions_rows_and_is_seeded():
  user, label = _data()
  a = split_rows(user, label, seed=3)
  b = split_rows(user, label, seed=3)
  c = split_rows(user, label, seed=4)
  together = np.concatenate(list(a.values()))
  assert sorted(together.tolist()) == list(range(len(user)))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
    assert np.all(np.diff(a[k]) > 0)
  assert not np.array_equal(a["test"], c["test"])


def test_random_split_stratification_and_fractions():
  user, label = _data(1)
  split = split_rows(user, label, seed=0)
  count = collections.defaultdict(lambda: [0, 0, 0])
  pos = collections.defaultdict(lambda: [0, 0, 0])
  for k, name in enumerate(("train", "valid", "test")):
    for r in split[name]:
      count[user[r]][k] += 1
      pos[user[r]][k] += label[r] > 0
  for u in count:
    n, p = sum(count[u]), sum(pos[u])
    if n >= 10:
      assert all(abs(c - n * f) < 1 for c, f in zip(count[u], (0.7, 0.1, 0.2)))
    if n >= 3:
      assert min(count[u]) >= 1
      assert sum(x > 0 for x in pos[u]) == min(p, 3)


def test_single_positive_goes_to_train_about_seventy_percent():
  # 2000 users with 10 rows and exactly one positive: where does it land?
  user = np.repeat(np.arange(2000), 10)
  label = np.zeros(len(user))
  label[::10] = 1
  split = split_rows(user, label, seed=0)
  share = np.isin(np.nonzero(label)[0], split["train"]).mean()
  assert abs(share - 0.7) < 3 * np.sqrt(0.7 * 0.3 / 2000)


def test_time_split_is_chronological_per_user():
  rng = np.random.default_rng(2)
  user = rng.integers(0, 50, 2000)
  time = rng.permutation(2000).astype(float)
  split = split_rows(user, None, method="time", timestamps=time)
  of = np.empty(2000, int)
  for k, name in enumerate(("train", "valid", "test")):
    of[split[name]] = k
  for u in range(50):
    rows = np.nonzero(user == u)[0]
    ordered = of[rows[np.argsort(time[rows])]]
    assert np.all(np.diff(ordered) >= 0)  # train rows precede valid rows precede test rows


@pytest.mark.parametrize("kwargs,match", [
    (dict(fractions=(0.5, 0.5, 0.5)), "fractions"),
    (dict(method="time"), "timestamps"),
    (dict(method="bogus"), "method"),
])
def test_bad_arguments(kwargs, match):
  user, label = _data()
  with pytest.raises(ValueError, match=match):
    split_rows(user, label, **kwargs)
  with pytest.raises(ValueError, match="labels shape"):
    split_rows(user, label[:-1])
