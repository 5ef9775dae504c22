"""KuaiRand reader and TFDS builder on the real Pure feature sample plus written logs.

Expected values come from plain-Python reads of the fixture CSVs and the logs
the test writes, following the documented encoding: categories in numeric (or
text) order get ids 1..K, and empty, UNKNOWN or negative-sentinel values get 0.
"""

import csv
import json
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hgrank_jax.data import available_datasets
from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.official import kuairand
from hgrank_jax.data.official import tfds_builders

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "kuairand_pure"
ROOT = pathlib.Path(__file__).resolve().parents[2]
LOG_FILES = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv",
             "log_random_4_22_to_5_08_pure.csv")
BASE_TIME = 1649390000000


def _dict_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def write_kuairand(directory, rows_per_file=(700, 500, 300), seed=0):
  """Copies the feature sample and writes three logs; returns the log rows written."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
    shutil.copy(FIXTURE / name, directory / name)
  users = [int(r["user_id"]) for r in _dict_rows(FIXTURE / "user_features_pure.csv")]
  videos = [int(r["video_id"]) for r in _dict_rows(FIXTURE / "video_features_basic_pure.csv")]
  rng = random.Random(seed)
  written, serial = [], 0
  for name, count in zip(LOG_FILES, rows_per_file):
    is_rand = int("random" in name)
    with open(directory / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(kuairand.LOG_HEADER)
      for _ in range(count):
        row = {"user_id": rng.choice(users), "video_id": rng.choice(videos), "date": 20220408,
               "hourmin": rng.choice([0, 5, 1130, 2359]), "time_ms": BASE_TIME + 997 * serial,
               "is_click": rng.randint(0, 1), "is_like": rng.randint(0, 1), "is_follow": 0,
               "is_comment": 0, "is_forward": 0, "is_hate": 0, "long_view": rng.randint(0, 1),
               "play_time_ms": rng.randint(0, 9000), "duration_ms": 9000,
               "profile_stay_time": 0, "comment_stay_time": 0, "is_profile_enter": 0,
               "is_rand": is_rand, "tab": rng.randint(0, 4)}
        writer.writerow([row[c] for c in kuairand.LOG_HEADER])
        written.append(row)
        serial += 1
  return written


def _expected_codes(values):
  """Plain-Python reference of the documented category encoding."""
  def canonical(v):
    v = v.strip()
    try:
      x = float(v)
      return str(int(x)) if x == int(x) else v
    except ValueError:
      return v
  def unknown(v):
    return v.lower() in ("", "unknown", "null") or (v.startswith("-") and v[1:].isdigit())
  canon = [canonical(v) for v in values]
  known = sorted({v for v in canon if not unknown(v)},
                 key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
  if not all(v.isdigit() for v in known):
    known = sorted(known)
  codes = {v: i + 1 for i, v in enumerate(known)}
  return [0 if unknown(v) else codes[v] for v in canon], len(known) + 1


@pytest.fixture(scope="module")
def kuairand_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("kuairand_pure")
  rows = write_kuairand(directory)
  return directory, rows


def test_every_value_matches_the_files(kuairand_dir):
  directory, log_rows = kuairand_dir
  spec, columns, info = kuairand.read(directory, "pure")
  users = {int(r["user_id"]): r for r in _dict_rows(FIXTURE / "user_features_pure.csv")}
  videos = {int(r["video_id"]): r for r in _dict_rows(FIXTURE / "video_features_basic_pure.csv")}
  user_ids = sorted(users)
  video_ids = sorted(videos)
  n = len(log_rows)
  assert len(columns["user_id"]) == n and info["rows"] == n
  assert info["log_rows_per_file"] == dict(zip(LOG_FILES, (700, 500, 300)))
  # Rows keep file order: the standard logs by name, then the random log.
  assert columns["time_ms"].tolist() == [r["time_ms"] for r in log_rows]
  assert columns["user_id"].tolist() == [r["user_id"] for r in log_rows]
  assert columns["video_id"].tolist() == [r["video_id"] for r in log_rows]
  for name in ("is_click", "long_view", "is_like"):
    assert columns[name].dtype == np.float32
    assert columns[name].tolist() == [float(r[name]) for r in log_rows]
  assert columns["is_rand"].tolist() == [r["is_rand"] for r in log_rows]
  assert info["random_exposure_rows"] == 300
  assert columns["tab"].tolist() == [r["tab"] for r in log_rows]
  assert columns["hour"].tolist() == [r["hourmin"] // 100 for r in log_rows]
  assert columns["date"].tolist() == [20220408] * n

  # User side features: categories and log1p counts, joined per row.
  for field in kuairand.USER_CATEGORICAL:
    codes, vocab = _expected_codes([users[u][field] for u in user_ids])
    code_of = dict(zip(user_ids, codes))
    assert spec.categorical_feature(field).vocab_size == vocab, field
    assert columns[field].tolist() == [code_of[r["user_id"]] for r in log_rows], field
    assert spec.categorical_feature(field).tower == "user"
  for field in kuairand.USER_COUNTS:
    expected = [math.log1p(float(users[r["user_id"]][field])) for r in log_rows]
    np.testing.assert_allclose(columns[field], expected, rtol=1e-6)
  # Quirks, counted over the user table: -124 sentinels, UNKNOWN, empty one-hots.
  unknown = info["unknown_values"]["user_features"]
  assert unknown["is_live_streamer"] == sum(u["is_live_streamer"] == "-124" for u in users.values())
  assert unknown["is_live_streamer"] > 0
  assert unknown["user_active_degree"] == sum(u["user_active_degree"] == "UNKNOWN"
                                              for u in users.values()) > 0
  assert unknown["onehot_feat12"] == sum(u["onehot_feat12"] == "" for u in users.values()) > 0
  assert spec.categorical_feature("is_live_streamer").vocab_size == 2  # unknown + "1"
  fans_codes, _ = _expected_codes([users[u]["fans_user_num_range"] for u in user_ids])
  assert "[100,1k)" in {users[u]["fans_user_num_range"] for u in user_ids}
  assert min(fans_codes) >= 1  # quoted range buckets are known categories

  # Video side: category = first tag (0 when none), other categories, duration.
  first = [videos[v]["tag"].split(",")[0] for v in video_ids]
  codes, vocab = _expected_codes(first)
  category_of = dict(zip(video_ids, codes))
  assert columns["category"].tolist() == [category_of[r["video_id"]] for r in log_rows]
  assert spec.categorical_feature("category").vocab_size == vocab
  assert spec.category_field == "category" and spec.user_field == "user_id"
  assert info["videos_without_tag"] == sum(v["tag"] == "" for v in videos.values()) > 0
  for field in kuairand.VIDEO_CATEGORICAL:
    codes, vocab = _expected_codes([videos[v][field] for v in video_ids])
    code_of = dict(zip(video_ids, codes))
    assert columns[field].tolist() == [code_of[r["video_id"]] for r in log_rows], field
    assert spec.categorical_feature(field).vocab_size == vocab
  duration = [videos[r["video_id"]]["video_duration"] for r in log_rows]
  expected = [math.log1p(float(d) / 1000) if d else 0.0 for d in duration]
  np.testing.assert_allclose(columns["video_duration"], expected, rtol=1e-6)
  assert info["unknown_values"]["video_features"]["video_duration"] == sum(
      v["video_duration"] == "" for v in videos.values()) > 0

  assert spec.categorical_feature("user_id").vocab_size == max(user_ids) + 1
  assert spec.categorical_feature("video_id").vocab_size == max(video_ids) + 1
  assert spec.categorical_feature("tab").vocab_size == max(r["tab"] for r in log_rows) + 1
  assert spec.labels == ("is_click", "long_view", "is_like")
  assert info["skipped_rows"] == {}


def test_missing_files_are_all_named(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    kuairand.read(tmp_path, "pure")
  message = str(error.value)
  for pattern in ("log_standard_*_pure.csv", "log_random_*_pure.csv", "user_features_pure.csv",
                  "video_features_basic_pure.csv"):
    assert f"MISSING {pattern}" in message
  assert "https://kuairand.com" in message
  shutil.copy(FIXTURE / "user_features_pure.csv", tmp_path)
  with pytest.raises(FileNotFoundError, match="found   user_features_pure.csv"):
    kuairand.read(tmp_path, "pure")


def _replace_line(path, line_number, text):
  lines = path.read_text().splitlines(keepends=True)
  lines[line_number - 1] = text + "\n"
  path.write_text("".join(lines))


def test_malformed_log_rows_raise_or_are_counted(tmp_path):
  write_kuairand(tmp_path, rows_per_file=(20, 10, 5))
  path = tmp_path / LOG_FILES[1]
  _replace_line(path, 4, "1,2,3")
  _replace_line(path, 6, "abc" + path.read_text().splitlines()[5][1:])
  with pytest.raises(csv_core.CsvFormatError,
                     match=f"{LOG_FILES[1]}: line 4: expected 19 fields"):
    kuairand.read(tmp_path, "pure")
  _, columns, info = kuairand.read(tmp_path, "pure", skip_malformed=True)
  assert info["skipped_rows"] == {LOG_FILES[1]: {"wrong_field_count": 1, "non_numeric_user_id": 1}}
  assert len(columns["user_id"]) == 33


def test_unknown_user_is_an_error_or_counted(tmp_path):
  rows = write_kuairand(tmp_path, rows_per_file=(20, 10, 5))
  path = tmp_path / LOG_FILES[0]
  text = path.read_text().splitlines()[2].split(",")
  text[0] = "999999"
  _replace_line(path, 3, ",".join(text))
  with pytest.raises(csv_core.CsvFormatError,
                     match=f"{LOG_FILES[0]}: line 3: user_id not in the user features file"):
    kuairand.read(tmp_path, "pure")
  _, columns, info = kuairand.read(tmp_path, "pure", skip_malformed=True)
  assert info["skipped_rows"] == {LOG_FILES[0]: {"user_id not in the user features file": 1}}
  assert columns["time_ms"].tolist() == [r["time_ms"] for i, r in enumerate(rows) if i != 1]


def test_wrong_header_and_empty_file(tmp_path):
  write_kuairand(tmp_path, rows_per_file=(5, 5, 5))
  path = tmp_path / LOG_FILES[2]
  _replace_line(path, 1, ",".join(kuairand.LOG_HEADER).replace("is_click", "click"))
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"lacks the expected column\(s\) \['is_click'\]"):
    kuairand.read(tmp_path, "pure")
  path.write_text("")
  with pytest.raises(csv_core.CsvFormatError, match=f"{LOG_FILES[2]}: the file is empty"):
    kuairand.read(tmp_path, "pure")


def test_tfds_build_holds_the_same_rows_in_blocks_of_whole_users(kuairand_dir, tmp_path):
  directory, log_rows = kuairand_dir
  builder = tfds_builders.prepare("kuairand", "pure", manual_dir=directory, data_dir=tmp_path,
                                  split_seed=3, block_rows=64)
  prepared = tfds_builders.load_prepared("kuairand", "pure", data_dir=tmp_path)
  direct = tfds_builders.load("kuairand", "pure", seed=3, manual_dir=directory)
  assert prepared.spec == direct.spec
  assert prepared.info["skipped_rows"] == {}
  sources = builder.as_data_source()
  for split in ("train", "valid", "test"):
    got, want = prepared.split(split), direct.split(split)
    order_got, order_want = np.argsort(got["time_ms"]), np.argsort(want["time_ms"])
    assert sorted(got) == sorted(want)
    for name in want:
      np.testing.assert_array_equal(got[name][order_got], want[name][order_want], err_msg=name)
    layout = builder.info.metadata["splits"][split]
    assert layout["num_rows"] == len(want["user_id"])
    seen_users = set()
    for index in range(len(sources[split])):
      block = sources[split][index]
      assert block["block_index"] == index
      users = block["user_id"]
      assert len(users) == layout["rows_per_block"][index]
      if index < len(sources[split]) - 1:
        assert len(users) >= 64
      starts = np.r_[0, np.nonzero(np.diff(users))[0] + 1]
      assert np.diff(np.r_[starts, len(users)]).tolist() == layout["group_sizes"][index]
      assert not seen_users & set(users[starts].tolist())  # a user lives in one block
      assert len(set(users[starts].tolist())) == len(starts)  # ...in one run
      seen_users |= set(users.tolist())
      for start, end in zip(starts, np.r_[starts[1:], len(users)]):
        assert np.all(np.diff(block["time_ms"][start:end]) > 0)  # time order within a user
  assert sum(prepared.num_rows(s) for s in ("train", "valid", "test")) == len(log_rows)
  # Same arguments reuse the build; other ones are refused rather than mixed.
  tfds_builders.prepare("kuairand", "pure", manual_dir=directory, data_dir=tmp_path,
                        split_seed=3, block_rows=64)
  with pytest.raises(ValueError, match="split_seed=3, block_rows=64, reader_options={}; "
                     "asked for split_seed=4"):
    tfds_builders.prepare("kuairand", "pure", manual_dir=directory, data_dir=tmp_path,
                          split_seed=4, block_rows=64)


def test_data_stats_with_manual_dir(kuairand_dir, tmp_path):
  directory, log_rows = kuairand_dir
  result = subprocess.run(
      [sys.executable, "-m", "launch.data_stats", "--dataset", "kuairand:pure", "--manual_dir",
       str(directory), "--json", str(tmp_path / "s.json")],
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy())
  assert result.returncode == 0, result.stderr
  assert "# kuairand:pure" in result.stdout and "random_exposure_rows: 300" in result.stdout
  stats = json.loads((tmp_path / "s.json").read_text())
  assert sum(s["rows"] for s in stats["splits"].values()) == len(log_rows)
  clicks = sum(r["is_click"] for r in log_rows)
  assert sum(s["positives"] for s in stats["splits"].values()) == clicks


def test_data_stats_prepares_a_tfds_build(kuairand_dir, tmp_path):
  # --tfds_dir prepares the array_record build and summarises it: the same splits.
  directory, _ = kuairand_dir
  result = subprocess.run(
      [sys.executable, "-m", "launch.data_stats", "--dataset", "kuairand:pure", "--manual_dir",
       str(directory), "--tfds_dir", str(tmp_path / "tfds"), "--json", str(tmp_path / "t.json")],
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy())
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "tfds" / "hgrank_kuairand" / "pure" / "1.0.0" / "dataset_info.json").is_file()
  direct = tfds_builders.load("kuairand", "pure", seed=0, manual_dir=directory)
  splits = json.loads((tmp_path / "t.json").read_text())["splits"]
  for split in ("train", "valid", "test"):
    assert splits[split]["rows"] == direct.num_rows(split)
    assert splits[split]["positives"] == int(direct.split(split)["is_click"].sum())


def test_every_builder_is_registered_with_its_configs():
  registered = available_datasets()
  for name, (_, configs) in tfds_builders.BUILDERS.items():
    assert registered[name] == configs, name


def test_27k_reads_every_part_file(tmp_path):
  rows = write_kuairand(tmp_path, rows_per_file=(30, 20, 10))
  renames = {"user_features_pure.csv": "user_features_27k.csv",
             "video_features_basic_pure.csv": "video_features_basic_27k.csv",
             LOG_FILES[0]: "log_standard_4_08_to_4_21_27k_part1.csv",
             LOG_FILES[1]: "log_standard_4_08_to_4_21_27k_part2.csv",
             LOG_FILES[2]: "log_random_4_22_to_5_08_27k.csv"}
  for old, new in renames.items():
    (tmp_path / old).rename(tmp_path / new)
  _, columns, info = kuairand.read(tmp_path, "27k")
  assert columns["time_ms"].tolist() == [r["time_ms"] for r in rows]
  assert list(info["log_rows_per_file"].values()) == [30, 20, 10]
  with pytest.raises(FileNotFoundError, match="MISSING log_standard_\\*_pure.csv"):
    kuairand.read(tmp_path, "pure")
