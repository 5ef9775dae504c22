"""MovieLens 100K and 1M readers on files written in the official formats."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.official import movielens
from hgrank_jax.data.official import tfds_builders

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]
# movie id -> (title, genre names); movie 4 has only 100K's "unknown" genre.
MOVIES = {1: ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
          2: ("Café au lait (1993)", ["Comedy"]),
          3: ("Heat (1995)", ["Action", "Crime", "Thriller"]),
          4: ("unknown", []),
          7: ("Western Film (1990)", ["Western", "Drama"])}
# user id -> (age in years, gender, 100K occupation, 1M age group, 1M occupation code)
USERS = {1: (24, "M", "technician", 18, 12), 2: (53, "F", "other", 50, 0),
         3: (16, "M", "student", 1, 10), 5: (33, "F", "writer", 25, 20)}
RATINGS = [(1, 1, 5, 874965758), (1, 3, 3, 874965760), (2, 2, 4, 876893171),
           (3, 4, 1, 878542960), (5, 7, 4, 886397596), (2, 1, 2, 884182806),
           (3, 3, 5, 881171488), (5, 2, 1, 891628467), (1, 7, 4, 875072484),
           (2, 3, 4, 875072485), (3, 1, 3, 875072486), (5, 1, 5, 875072487)]


def write_100k(directory, ratings=RATINGS):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
  lines = []
  for movie, (title, genres) in MOVIES.items():
    flags = [int(not genres)] + [int(g in genres) for g in GENRES]
    lines.append(f"{movie}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?x|"
                 + "|".join(map(str, flags)) + "\n")
  (directory / "u.item").write_bytes("".join(lines).encode("latin-1"))
  (directory / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|85711\n"
                                            for u, (a, g, o, _, _) in USERS.items()))


def write_1m(directory, ratings=RATINGS):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings))
  movies = [f"{m}::{title}::{'|'.join(genres)}\n" for m, (title, genres) in MOVIES.items()
            if genres]  # 1M has no genre-less movie; movie 4 is absent
  (directory / "movies.dat").write_bytes("".join(movies).encode("latin-1"))
  (directory / "users.dat").write_text("".join(f"{u}::{g}::{ag}::{oc}::48067\n"
                                               for u, (_, g, _, ag, oc) in USERS.items()))


def _expected_category(movie):
  # First genre in the official genre order, 1-based; 0 when none.
  genres = MOVIES[movie][1]
  return min(GENRES.index(g) for g in genres) + 1 if genres else 0


def _codes(values):
  known = sorted(set(values), key=lambda v: (int(v),) if str(v).isdigit() else (0, v))
  if not all(str(v).isdigit() for v in known):
    known = sorted(set(values))
  return {v: i + 1 for i, v in enumerate(known)}, len(known) + 1


@pytest.mark.parametrize("config", ["100k", "1m"])
def test_every_value_matches_the_files(tmp_path, config):
  ratings = [r for r in RATINGS if config == "100k" or r[1] != 4]
  (write_100k if config == "100k" else write_1m)(tmp_path, ratings)
  spec, columns, info = movielens.read(tmp_path, config)
  assert columns["user_id"].tolist() == [r[0] for r in ratings]
  assert columns["item_id"].tolist() == [r[1] for r in ratings]
  assert columns["rating"].tolist() == [float(r[2]) for r in ratings]
  assert columns["timestamp"].tolist() == [r[3] for r in ratings]
  assert columns["label"].tolist() == [float(r[2] >= 4) for r in ratings]
  assert columns["category"].tolist() == [_expected_category(r[1]) for r in ratings]
  expected_genres = [[float(g in MOVIES[r[1]][1]) for g in GENRES] for r in ratings]
  assert columns["genres"].dtype == np.float32 and columns["genres"].tolist() == expected_genres
  gender_codes, gender_vocab = _codes([u[1] for u in USERS.values()])
  assert columns["gender"].tolist() == [gender_codes[USERS[r[0]][1]] for r in ratings]
  age_codes, age_vocab = _codes([str(u[3]) for u in USERS.values()])
  assert columns["age"].tolist() == [age_codes[str(USERS[r[0]][3])] for r in ratings]
  occupation = [u[2] if config == "100k" else str(u[4]) for u in USERS.values()]
  occupation_codes, occupation_vocab = _codes(occupation)
  user_occupation = {u: occ for u, occ in zip(USERS, occupation)}
  assert columns["occupation"].tolist() == [occupation_codes[user_occupation[r[0]]]
                                            for r in ratings]
  assert spec.categorical_feature("gender").vocab_size == gender_vocab == 3
  assert spec.categorical_feature("age").vocab_size == age_vocab
  assert spec.categorical_feature("occupation").vocab_size == occupation_vocab
  assert spec.categorical_feature("user_id").vocab_size == max(USERS) + 1
  assert spec.categorical_feature("item_id").vocab_size == 8
  assert spec.categorical_feature("category").vocab_size == 19
  assert spec.category_field == "category" and spec.numeric[0].dim == 18
  assert info["movies_without_genre"] == (1 if config == "100k" else 0)
  assert info["skipped_rows"] == {}


def test_label_threshold_is_configurable(tmp_path):
  write_100k(tmp_path)
  _, columns, info = movielens.read(tmp_path, "100k", label_threshold=5)
  assert columns["label"].tolist() == [float(r[2] >= 5) for r in RATINGS]
  assert info["label"] == "rating >= 5"


def test_age_groups_follow_the_1m_bins():
  ages = np.asarray([1, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 90])
  assert movielens.age_group(ages).tolist() == [1, 1, 18, 18, 25, 25, 35, 35, 45, 45, 50, 50,
                                                56, 56]


@pytest.mark.parametrize("config,files", [("100k", ["u.data", "u.item", "u.user"]),
                                          ("1m", ["ratings.dat", "movies.dat", "users.dat"])])
def test_missing_files_are_all_named(tmp_path, config, files):
  with pytest.raises(FileNotFoundError) as error:
    movielens.read(tmp_path, config)
  for name in files:
    assert f"MISSING {name}" in str(error.value)
  assert "https://grouplens.org/datasets/movielens/" in str(error.value)


def test_malformed_ratings_raise_or_are_counted(tmp_path):
  write_1m(tmp_path, [r for r in RATINGS if r[1] != 4])
  path = tmp_path / "ratings.dat"
  lines = path.read_text().splitlines()
  lines[1] = "1::3::3"                       # line 2: a field short
  lines[3] = "x::2::4::876893171"            # line 4: non-numeric user
  lines[5] = "2::1::9::884182806"            # line 6: rating out of range
  lines[6] = "3::99::5::881171488"           # line 7: unknown movie
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(csv_core.CsvFormatError, match="ratings.dat: line 2: expected 4 fields"):
    movielens.read(tmp_path, "1m")
  _, columns, info = movielens.read(tmp_path, "1m", skip_malformed=True)
  assert info["skipped_rows"] == {"ratings.dat": {
      "wrong_field_count": 1, "non_numeric_user": 1, "rating outside 1..5": 1,
      "item not in the movies file": 1}}
  assert len(columns["user_id"]) == 11 - 4
  lines[1], lines[3] = "1::3::3::874965760", "2::2::4::876893171"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(csv_core.CsvFormatError, match="ratings.dat: line 6: rating outside 1..5"):
    movielens.read(tmp_path, "1m")


def test_tfds_build_and_data_stats(tmp_path):
  write_100k(tmp_path / "ml-100k")
  builder = tfds_builders.prepare("movielens", "100k", manual_dir=tmp_path / "ml-100k",
                                  data_dir=tmp_path / "tfds", block_rows=4)
  prepared = tfds_builders.load_prepared("movielens", "100k", data_dir=tmp_path / "tfds")
  direct = tfds_builders.load("movielens", "100k", manual_dir=tmp_path / "ml-100k")
  for split in ("train", "valid", "test"):
    key = lambda cols: sorted(zip(cols["user_id"].tolist(), cols["item_id"].tolist(),
                                  cols["timestamp"].tolist(), cols["genres"].tolist()))
    assert key(prepared.split(split)) == key(direct.split(split))
  assert builder.info.features["genres"].shape == (None, 18)
  result = subprocess.run(
      [sys.executable, "-m", "launch.data_stats", "--dataset", "movielens:100k", "--manual_dir",
       str(tmp_path / "ml-100k")], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=os.environ.copy())
  assert result.returncode == 0, result.stderr
  assert "# movielens:100k" in result.stdout and "label: rating >= 4" in result.stdout
