"""Official MovieLens 100K and 1M ratings with user and movie features.

GroupLens MovieLens (https://grouplens.org/datasets/movielens/): ``ml-100k``
ships ``u.data`` (tab-separated user, item, rating, timestamp), ``u.item``
(pipe-separated, Latin-1, 19 genre flags at the end, the first being
"unknown") and ``u.user`` (user | age | gender | occupation | zip);
``ml-1m`` ships ``ratings.dat``, ``movies.dat`` (genres as a ``|`` list) and
``users.dat``, all separated by ``::``. :func:`read` returns per rating:

* ``user_id`` and ``item_id`` (the official ids; id 0 is unused), ``category``
  = the movie's first genre (ids 1..18 in :data:`GENRES` order; 0 when it has
  none, e.g. 100K's "unknown"-only movies), ``genres`` = multi-hot float32
  ``[n, 18]`` of all its genres (item tower);
* ``gender``, ``age`` (1M's age groups; 100K ages are put in the same groups)
  and ``occupation`` (user tower);
* ``label`` = 1 when rating >= ``label_threshold`` (4 by default), and the extra
  columns ``rating`` and ``timestamp``.
"""

from __future__ import annotations

import pathlib

import numpy as np

from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature

CONFIGS = ("100k", "1m")
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
# 1M's age groups (users.dat README): 1 = under 18, 18 = 18-24, ..., 56 = 56+.
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
INSTRUCTIONS = ("Obtain MovieLens from https://grouplens.org/datasets/movielens/ (ml-100k.zip or "
                "ml-1m.zip), unzip it and pass the extracted ml-100k/ or ml-1m/ folder as the "
                "manual directory (see the archive's README for its usage licence).")
_FILES = {"100k": {"u.data": "ratings: user<TAB>item<TAB>rating<TAB>timestamp",
                   "u.item": "movies: id|title|release|video release|IMDb URL|19 genre flags",
                   "u.user": "users: id|age|gender|occupation|zip"},
          "1m": {"ratings.dat": "ratings: UserID::MovieID::Rating::Timestamp",
                 "movies.dat": "movies: MovieID::Title::Genres (Genre|Genre...)",
                 "users.dat": "users: UserID::Gender::Age::Occupation::Zip-code"}}


def expected_files(config: str) -> dict[str, str]:
  """File name -> description of every file the ``config`` needs."""
  if config not in CONFIGS:
    raise ValueError(f"movielens has no config {config!r}; configs are {list(CONFIGS)}")
  return dict(_FILES[config])


def age_group(age: np.ndarray) -> np.ndarray:
  """1M's age group of each age in years (int64 ``[n]``)."""
  bounds = np.asarray(AGE_GROUPS[1:])
  return np.asarray(AGE_GROUPS)[np.searchsorted(bounds, np.asarray(age), side="right")]


def _read_100k(directory: pathlib.Path, report, skip_malformed):
  options = dict(has_header=False, quoted=False, encoding="latin-1",
                 skip_malformed=skip_malformed, report=report)
  ratings = csv_core.read_csv(directory / "u.data", dict.fromkeys(
      ("user", "item", "rating", "timestamp"), csv_core.INT), header=("user", "item", "rating",
      "timestamp"), delimiter="\t", **options)
  flags = ("unknown",) + GENRES
  item_header = ("item", "title", "release", "video_release", "url") + flags
  movies = csv_core.read_csv(directory / "u.item", {"item": csv_core.INT, **dict.fromkeys(
      flags, csv_core.INT)}, header=item_header, delimiter="|", **options)
  genres = np.stack([movies[g] for g in GENRES], axis=1).astype(np.float32)
  users = csv_core.read_csv(directory / "u.user", {"user": csv_core.INT, "age": csv_core.INT,
                            "gender": csv_core.STR, "occupation": csv_core.STR},
                            header=("user", "age", "gender", "occupation", "zip"),
                            delimiter="|", **options)
  users["age_group"] = age_group(users["age"]).astype(str).astype(object)
  unknown_only = int(np.sum((movies["unknown"] == 1) & (genres.sum(axis=1) == 0)))
  return ratings, movies["item"], genres, users, {"movies_with_only_unknown_genre": unknown_only,
                                                  "_movie_lines": movies["_line"]}


def _read_1m(directory: pathlib.Path, report, skip_malformed):
  options = dict(has_header=False, quoted=False, delimiter="::", encoding="latin-1",
                 skip_malformed=skip_malformed, report=report)
  ratings = csv_core.read_csv(directory / "ratings.dat", dict.fromkeys(
      ("user", "item", "rating", "timestamp"), csv_core.INT), header=("user", "item", "rating",
      "timestamp"), **options)
  movies = csv_core.read_csv(directory / "movies.dat", {"item": csv_core.INT,
                             "genres": csv_core.STR}, header=("item", "title", "genres"),
                             **options)
  genre_index = {g: i for i, g in enumerate(GENRES)}
  genres = np.zeros((len(movies["item"]), len(GENRES)), np.float32)
  unknown_names = set()
  for row, text in enumerate(movies["genres"]):
    for name in filter(None, text.split("|")):
      if name in genre_index:
        genres[row, genre_index[name]] = 1.0
      else:
        unknown_names.add(name)
  if unknown_names:
    raise csv_core.CsvFormatError(f"{directory / 'movies.dat'}: unknown genre names "
                                  f"{sorted(unknown_names)}; expected {list(GENRES)}")
  users = csv_core.read_csv(directory / "users.dat", {"user": csv_core.INT, "gender":
                            csv_core.STR, "age": csv_core.STR, "occupation": csv_core.STR},
                            header=("user", "gender", "age", "occupation", "zip"), **options)
  users["age_group"] = users["age"]
  return ratings, movies["item"], genres, users, {"_movie_lines": movies["_line"]}


def feature_spec(num_users: int, num_items: int, vocab_sizes: dict[str, int]) -> FeatureSpec:
  """The MovieLens spec; ``vocab_sizes`` holds gender, age and occupation sizes."""
  return FeatureSpec(
      categorical=(CategoricalFeature("user_id", num_users, tower="user"),
                   CategoricalFeature("item_id", num_items, tower="item"),
                   CategoricalFeature("category", len(GENRES) + 1, tower="item"),
                   CategoricalFeature("gender", vocab_sizes["gender"], tower="user"),
                   CategoricalFeature("age", vocab_sizes["age"], tower="user"),
                   CategoricalFeature("occupation", vocab_sizes["occupation"], tower="user")),
      numeric=(NumericFeature("genres", dim=len(GENRES), tower="item"),),
      labels=("label",), user_field="user_id", item_field="item_id", category_field="category")


def read(manual_dir: pathlib.Path | str, config: str = "100k", *, skip_malformed: bool = False,
         label_threshold: int = 4) -> tuple[FeatureSpec, dict[str, np.ndarray], dict]:
  """Reads one MovieLens release from ``manual_dir``.

  Args:
    manual_dir: the extracted ``ml-100k/`` or ``ml-1m/`` folder.
    config: "100k" or "1m".
    skip_malformed: skip and count malformed rows, ratings outside 1..5 and
      ratings of users or movies absent from the other files.
    label_threshold: label = 1 when rating >= this.

  Returns:
    (spec, columns, info); columns ``[n]`` in file order (``genres`` ``[n, 18]``).
  """
  csv_core.check_files(manual_dir, expected_files(config), dataset=f"movielens:{config}",
                       instructions=INSTRUCTIONS)
  directory, report = pathlib.Path(manual_dir), csv_core.MalformedRows()
  reader = _read_100k if config == "100k" else _read_1m
  ratings, movie_ids, genres, users, extra_info = reader(directory, report, skip_malformed)
  movie_file, user_file = list(expected_files(config))[1:]
  csv_core.check_unique({"item": movie_ids, "_line": extra_info.pop("_movie_lines")}, "item",
                        directory / movie_file)
  csv_core.check_unique(users, "user", directory / user_file)
  rating_file = next(iter(expected_files(config)))
  movie_row, movie_found = csv_core.lookup(ratings["item"], movie_ids)
  user_row, user_found = csv_core.lookup(ratings["user"], users["user"])
  for bad, reason in ((~np.isin(ratings["rating"], (1, 2, 3, 4, 5)), "rating outside 1..5"),
                      (~movie_found, "item not in the movies file"),
                      (~user_found, "user not in the users file")):
    if bad.any() and not skip_malformed:
      i = int(np.argmax(bad))
      raise csv_core.CsvFormatError(f"{directory / rating_file}: line {ratings['_line'][i]}: "
                                    f"{reason} ({int(bad.sum())} such rows)")
    for line in ratings["_line"][bad]:
      report.add(rating_file, reason, int(line))
  keep = np.isin(ratings["rating"], (1, 2, 3, 4, 5)) & movie_found & user_found
  ratings = {k: v[keep] for k, v in ratings.items()}
  if not len(ratings["user"]):
    raise csv_core.CsvFormatError(f"{directory / rating_file}: no valid ratings")
  movie_row, user_row = movie_row[keep], user_row[keep]

  has_genre = genres.sum(axis=1) > 0
  first_genre = np.where(has_genre, genres.argmax(axis=1) + 1, 0).astype(np.int32)
  columns = {"user_id": ratings["user"].astype(np.int32),
             "item_id": ratings["item"].astype(np.int32),
             "category": first_genre[movie_row], "genres": genres[movie_row]}
  vocab_sizes, unknown = {}, {}
  for name, raw in (("gender", users["gender"]), ("age", users["age_group"]),
                    ("occupation", users["occupation"])):
    ids, vocabulary, unknown[name] = csv_core.encode_categories(raw)
    columns[name] = ids[user_row]
    vocab_sizes[name] = len(vocabulary) + 1
  columns["label"] = (ratings["rating"] >= label_threshold).astype(np.float32)
  columns["rating"] = ratings["rating"].astype(np.float32)
  columns["timestamp"] = ratings["timestamp"]
  spec = feature_spec(int(users["user"].max()) + 1, int(movie_ids.max()) + 1, vocab_sizes)
  info = {"source": "MovieLens (GroupLens), https://grouplens.org/datasets/movielens/",
          "config": config, "manual_dir": str(manual_dir), "rows": int(keep.sum()),
          "label": f"rating >= {label_threshold}", "movies_without_genre": int((~has_genre).sum()),
          "unknown_values": unknown, "skipped_rows": report.to_info(),
          "extra_columns": ["rating", "timestamp"], **extra_info}
  return spec, columns, info
