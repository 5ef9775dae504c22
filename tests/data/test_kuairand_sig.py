"""The bundled KuaiRand subset: the documented counts of the `given` view and the
`paper` view's split protocol, checked against plain-Python readings of the files."""

import collections
import pathlib
import shutil

import numpy as np
import pytest

from hgrank_jax.data import load_dataset
from hgrank_jax.data.official import kuairand_sig
from hgrank_jax.data.splits import per_user_split_sizes

BUNDLED = kuairand_sig.BUNDLED_DIR


def _read_plain(name):
  rows = []
  with open(BUNDLED / name) as f:
    for line in f:
      u, i, y = line.split()
      rows.append((int(u), int(i), int(float(y))))
  return rows


@pytest.fixture(scope="module")
def plain():
  return {s: _read_plain(f"{s}.txt") for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def given():
  return kuairand_sig.load("given")


@pytest.fixture(scope="module")
def paper():
  return kuairand_sig.load("paper", seed=0)


def test_bundle_ships_provenance_and_licence():
  assert (BUNDLED / "PROVENANCE.md").read_text().count("CC BY-SA 4.0") >= 1
  assert "Attribution-ShareAlike 4.0" in (BUNDLED / "LICENSE.CC-BY-SA-4.0.txt").read_text()


def test_given_view_documented_counts(plain, given):
  assert {s: len(r) for s, r in plain.items()} == {"train": 184172, "valid": 26309, "test": 52619}
  everything = [r for rows in plain.values() for r in rows]
  assert len({u for u, _, _ in everything}) == 16974
  assert len({i for _, i, _ in everything}) == 4373
  assert round(sum(y for _, _, y in everything) / len(everything), 3) == 0.443
  for split, (with_pos, users) in {"valid": (7674, 12345), "test": (11181, 15425)}.items():
    assert len({u for u, _, y in plain[split] if y}) == with_pos
    assert len({u for u, _, _ in plain[split]}) == users
  train_triples = set(plain["train"])
  assert sum(r in train_triples for r in plain["test"]) == 2150
  train_rows = collections.Counter(u for u, _, _ in plain["train"])
  assert round(np.mean([c <= 20 for c in train_rows.values()]), 2) == 0.91
  # The loader returns exactly the file contents, in order.
  for split, rows in plain.items():
    cols = given.split(split)
    np.testing.assert_array_equal(cols["user_id"], [r[0] for r in rows])
    np.testing.assert_array_equal(cols["item_id"], [r[1] for r in rows])
    np.testing.assert_array_equal(cols["label"], [r[2] for r in rows])
    assert cols["user_id"].dtype == np.int32 and cols["label"].dtype == np.float32


def _triples(columns):
  return list(zip(columns["user_id"].tolist(), columns["item_id"].tolist(),
                  columns["label"].astype(int).tolist()))


def test_paper_view_is_complete_disjoint_and_deduplicated(plain, paper):
  everything = [r for rows in plain.values() for r in rows]
  distinct = set(everything)
  split_rows = {s: _triples(paper.split(s)) for s in ("train", "valid", "test")}
  together = [r for rows in split_rows.values() for r in rows]
  assert len(together) == len(distinct)          # no row twice, in one split or across splits
  assert set(together) == distinct               # every distinct row somewhere
  assert paper.info["duplicate_rows_removed"] == len(everything) - len(distinct)
  assert paper.info["pooled_rows"] == len(everything)


def test_paper_view_sizes_and_stratification_per_user(plain, paper):
  per_user = collections.defaultdict(lambda: np.zeros(3, int))
  positives = collections.defaultdict(lambda: np.zeros(3, int))
  for k, split in enumerate(("train", "valid", "test")):
    for u, _, y in _triples(paper.split(split)):
      per_user[u][k] += 1
      positives[u][k] += y
  users = sorted(per_user)
  sizes = np.array([per_user[u] for u in users])
  pos = np.array([positives[u] for u in users])
  n = sizes.sum(1)
  # 70/10/20 within rounding for users whose every split gets a row anyway (>= 10 rows).
  big = n >= 10
  assert np.all(np.abs(sizes[big] - n[big, None] * np.array([0.7, 0.1, 0.2])) < 1)
  # Users with 3..9 rows: at least one row per split, otherwise as close as possible.
  small = (n >= 3) & ~big
  assert np.all(sizes[small] >= 1)
  # Independent reference for the exact sizes: brute force over all allocations.
  for count in range(1, 40):
    best = min(((a, b, count - a - b) for a in range(count + 1) for b in range(count + 1 - a)),
               key=lambda s: (count >= 3 and min(s) == 0,
                              max(abs(x - count * f) for x, f in zip(s, (0.7, 0.1, 0.2)))))
    got = per_user_split_sizes(np.array([count]))[0]
    assert max(abs(x - count * f) for x, f in zip(got, (0.7, 0.1, 0.2))) == pytest.approx(
        max(abs(x - count * f) for x, f in zip(best, (0.7, 0.1, 0.2))), abs=1e-9), count
    assert (count < 3) or min(got) >= 1
  # Stratified: a user with >= 3 rows and >= 3 positives has a positive in every split;
  # with fewer positives, they sit in distinct splits.
  p = pos.sum(1)
  many = (n >= 3) & (p >= 3)
  assert many.sum() > 5000
  assert np.all(pos[many] >= 1)
  few = (n >= 3) & (p >= 1) & (p < 3)
  assert np.all((pos[few] >= 1).sum(1) == p[few])


def test_paper_view_is_seeded(paper):
  again = kuairand_sig.load("paper", seed=0)
  other = kuairand_sig.load("paper", seed=1)
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(again.split(split)["item_id"], paper.split(split)["item_id"])
  assert _triples(other.split("test")) != _triples(paper.split("test"))


def test_registry_names_and_errors():
  assert load_dataset("kuairand_sig:given").num_rows("train") == 184172
  with pytest.raises(ValueError, match="no view 'nope'"):
    load_dataset("kuairand_sig:nope")
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    load_dataset("nope")
  with pytest.raises(KeyError, match="no split 'dev'"):
    load_dataset("kuairand_sig:given").split("dev")


def test_missing_or_corrupt_files_give_clear_errors(tmp_path):
  for name in ("train.txt", "valid.txt"):
    shutil.copy(BUNDLED / name, tmp_path / name)
  with pytest.raises(FileNotFoundError, match="test.txt"):
    kuairand_sig.load("given", data_dir=tmp_path)
  (tmp_path / "test.txt").write_text("1 2 0.00\n3 99999 1.00\n")
  with pytest.raises(ValueError, match=r"test.txt: line 2: item id"):
    kuairand_sig.load("given", data_dir=tmp_path)
  (tmp_path / "test.txt").write_text("1 2 0.00\n3 4 0.50\n")
  with pytest.raises(ValueError, match=r"line 2: label 0.5"):
    kuairand_sig.load("given", data_dir=tmp_path)
  (tmp_path / "test.txt").write_text("1 2\n")
  with pytest.raises(ValueError, match="3 columns"):
    kuairand_sig.load("given", data_dir=tmp_path)
