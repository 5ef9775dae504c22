"""Taobao display-ad and user-behaviour readers on files in the official formats."""

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hgrank_jax.data.official import taobao
from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.official import tfds_builders

ROOT = pathlib.Path(__file__).resolve().parents[2]
# (user, time_stamp, adgroup_id, pid, nonclk, clk); user 777 has no profile row.
SAMPLE = [(581738, 1494137644, 1, "430548_1007", 1, 0),
          (449818, 1494638778, 3, "430548_1007", 1, 0),
          (914836, 1494650879, 4, "430548_1007", 1, 0),
          (914836, 1494651029, 5, "430539_1007", 0, 1),
          (777, 1494232593, 1, "430539_1007", 1, 0),
          (581738, 1494137800, 5, "430548_1007", 0, 1),
          (449818, 1494638900, 4, "430539_1007", 1, 0),
          (777, 1494232600, 3, "430548_1007", 1, 0),
          (914836, 1494650990, 1, "430548_1007", 1, 0),
          (581738, 1494137900, 3, "430539_1007", 1, 0)]
# adgroup_id -> (cate_id, campaign_id, customer, brand, price); brand NULL for ad 4.
ADS = {1: (6406, 83237, 1, 95471, 170.0), 3: (4520, 387991, 6, 247789, 199.0),
       4: (4280, 268250, 6, "NULL", 35.0), 5: (6406, 83237, 1, 95471, 0.9)}
PROFILE_HEADER = ("userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,"
                  "shopping_level,occupation,new_user_class_level ")
# userid -> profile values; empty pvalue_level / new_user_class_level as in the official file.
PROFILES = {581738: ("0", "5", "2", "4", "", "3", "0", "2"),
            449818: ("0", "7", "2", "6", "3", "3", "0", ""),
            914836: ("19", "8", "2", "2", "2", "3", "0", "4"),
            1000: ("0", "1", "1", "1", "1", "1", "1", "1")}


def write_ad(directory, sample=SAMPLE):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "raw_sample.csv").write_text(
      "user,time_stamp,adgroup_id,pid,nonclk,clk\n"
      + "".join(",".join(map(str, row)) + "\n" for row in sample))
  (directory / "ad_feature.csv").write_text(
      "adgroup_id,cate_id,campaign_id,customer,brand,price\n"
      + "".join(f"{a},{','.join(map(str, v))}\n" for a, v in ADS.items()))
  (directory / "user_profile.csv").write_text(
      PROFILE_HEADER + "\n" + "".join(f"{u},{','.join(v)}\n" for u, v in PROFILES.items()))


def _codes(values):
  known = sorted({v for v in values if v not in ("", "NULL")}, key=int)
  return {v: i + 1 for i, v in enumerate(known)}, len(known) + 1


def test_ad_every_value_matches_the_files(tmp_path):
  write_ad(tmp_path)
  spec, columns, info = taobao.read_ad(tmp_path)
  users = sorted({row[0] for row in SAMPLE})
  assert columns["user_id"].tolist() == [users.index(row[0]) for row in SAMPLE]
  assert columns["adgroup_id"].tolist() == [sorted(ADS).index(row[2]) for row in SAMPLE]
  assert columns["clk"].tolist() == [float(row[5]) for row in SAMPLE]
  assert columns["timestamp"].tolist() == [row[1] for row in SAMPLE]
  pid_codes = {"430539_1007": 1, "430548_1007": 2}
  assert columns["pid"].tolist() == [pid_codes[row[3]] for row in SAMPLE]
  for k, name in enumerate(taobao.AD_CATEGORICAL):
    codes, vocab = _codes([str(v[k]) for v in ADS.values()])
    assert columns[name].tolist() == [codes.get(str(ADS[row[2]][k]), 0) for row in SAMPLE], name
    assert spec.categorical_feature(name).vocab_size == vocab
  np.testing.assert_allclose(columns["price"], [math.log1p(ADS[row[2]][4]) for row in SAMPLE],
                             rtol=1e-6)
  assert info["unknown_values"]["ad_feature"]["brand"] == 1  # the NULL brand
  for k, name in enumerate(taobao.PROFILE_FIELDS):
    codes, vocab = _codes([v[k] for v in PROFILES.values()])
    expected = [codes.get(PROFILES[row[0]][k], 0) if row[0] in PROFILES else 0 for row in SAMPLE]
    assert columns[name].tolist() == expected, name
    assert spec.categorical_feature(name).vocab_size == vocab
  assert info["unknown_values"]["user_profile"]["pvalue_level"] == 1
  assert info["unknown_values"]["user_profile"]["new_user_class_level"] == 1
  assert info["users_without_profile"] == 1 and info["rows_without_profile"] == 2
  assert spec.category_field == "cate_id" and spec.labels == ("clk",)
  assert spec.categorical_feature("user_id").vocab_size == len(users)
  assert info["click_rate"] == pytest.approx(0.2)


def test_ad_missing_files_and_bad_rows(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    taobao.read_ad(tmp_path)
  for name in ("raw_sample.csv", "ad_feature.csv", "user_profile.csv"):
    assert f"MISSING {name}" in str(error.value)
  assert "tianchi.aliyun.com/dataset/56" in str(error.value)
  bad = list(SAMPLE)
  bad[2] = (914836, 1494650879, 4, "430548_1007", 1, 1)   # line 4: both clk and nonclk
  bad[5] = (581738, 1494137800, 9, "430548_1007", 0, 1)   # line 7: ad without features
  write_ad(tmp_path, bad)
  with pytest.raises(csv_core.CsvFormatError, match="raw_sample.csv: line 4: clk/nonclk"):
    taobao.read_ad(tmp_path)
  _, columns, info = taobao.read_ad(tmp_path, skip_malformed=True)
  assert info["skipped_rows"] == {"raw_sample.csv": {
      "clk/nonclk not one of (1, 0) or (0, 1)": 1, "adgroup_id not in ad_feature.csv": 1}}
  assert columns["timestamp"].tolist() == [r[1] for i, r in enumerate(SAMPLE) if i not in (2, 5)]
  (tmp_path / "ad_feature.csv").write_text(
      "adgroup_id,cate_id,campaign_id,customer,price\n1,2,3,4,5\n")
  with pytest.raises(csv_core.CsvFormatError, match=r"ad_feature.csv: line 1: .*\['brand'\]"):
    taobao.read_ad(tmp_path)


BEHAVIOR = [(1, 10, 100, "pv", 1511544070), (1, 10, 100, "cart", 1511544090),
            (1, 11, 101, "pv", 1511561733), (2, 10, 100, "pv", 1511550000),
            (2, 12, 102, "fav", 1511560000), (1, 10, 100, "pv", 1511500000),
            (3, 11, 101, "buy", 1511600000), (3, 11, 101, "pv", 1511590000),
            (2, 12, 102, "pv", 1511570000), (5, 13, 100, "pv", 1511580000)]


def write_behavior(directory, rows=BEHAVIOR):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "UserBehavior.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in rows))


@pytest.mark.parametrize("positive", [("cart", "fav", "buy"), ("buy",)])
def test_behavior_pairs_labels_and_categories(tmp_path, positive):
  write_behavior(tmp_path)
  spec, columns, info = taobao.read_behavior(tmp_path, positive_behaviors=positive)
  pairs = {}
  for user, item, category, behavior, time in BEHAVIOR:
    first = pairs.get((user, item))
    label = (first["label"] if first else 0) or behavior in positive
    if first is None or time < first["time"]:
      first = {"time": time, "category": category}
    pairs[(user, item)] = dict(first, label=label)
  users = sorted({r[0] for r in BEHAVIOR})
  items = sorted({r[1] for r in BEHAVIOR})
  categories = sorted({r[2] for r in BEHAVIOR})
  expected = sorted(pairs.items())  # rows sorted by (user, item)
  assert columns["user_id"].tolist() == [users.index(u) for (u, _), _ in expected]
  assert columns["item_id"].tolist() == [items.index(i) for (_, i), _ in expected]
  assert columns["label"].tolist() == [float(v["label"]) for _, v in expected]
  assert columns["timestamp"].tolist() == [v["time"] for _, v in expected]
  assert columns["category"].tolist() == [categories.index(v["category"]) + 1 for _, v in expected]
  assert spec.categorical_feature("category").vocab_size == len(categories) + 1
  assert info["rows"] == len(pairs) == 6 and info["log_rows"] == 10
  assert info["behavior_counts"] == {b: sum(r[3] == b for r in BEHAVIOR) for b in taobao.BEHAVIORS}


def test_behavior_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="MISSING UserBehavior.csv"):
    taobao.read_behavior(tmp_path)
  rows = list(BEHAVIOR)
  rows[3] = (2, 10, 100, "click", 1511550000)
  write_behavior(tmp_path, rows)
  with pytest.raises(csv_core.CsvFormatError, match="UserBehavior.csv: line 4: behavior_type"):
    taobao.read_behavior(tmp_path)
  _, columns, info = taobao.read_behavior(tmp_path, skip_malformed=True)
  assert info["log_rows"] == 9 and sum(info["skipped_rows"]["UserBehavior.csv"].values()) == 1
  with pytest.raises(ValueError, match="positive_behaviors must be"):
    taobao.read_behavior(tmp_path, positive_behaviors=("like",))
  write_behavior(tmp_path)
  with pytest.raises(ValueError, match=r"split\(s\) \['valid'\] get no rows"):
    tfds_builders.prepare("taobao_userbehavior", "default", manual_dir=tmp_path,
                          data_dir=tmp_path / "t")


@pytest.mark.parametrize("name", ["taobao_ad", "taobao_userbehavior"])
def test_tfds_build_and_data_stats(tmp_path, name):
  if name == "taobao_ad":
    write_ad(tmp_path / "files")
  else:  # enough pairs per user that every split gets rows
    rng = np.random.default_rng(0)
    write_behavior(tmp_path / "files", [
        (u, int(rng.integers(1, 40)), 7, str(rng.choice(taobao.BEHAVIORS)), 1511500000 + k)
        for k, u in enumerate(np.repeat(np.arange(1, 7), 12))])
  tfds_builders.prepare(name, "default", manual_dir=tmp_path / "files", data_dir=tmp_path / "t",
                        block_rows=2)
  prepared = tfds_builders.load_prepared(name, "default", data_dir=tmp_path / "t")
  direct = tfds_builders.load(name, "default", manual_dir=tmp_path / "files")
  assert prepared.spec == direct.spec
  for split in ("train", "valid", "test"):
    rows = lambda c: sorted(zip(*(c[k].tolist() for k in sorted(c))))
    assert rows(prepared.split(split)) == rows(direct.split(split))
  result = subprocess.run(
      [sys.executable, "-m", "launch.data_stats", "--dataset", name, "--manual_dir",
       str(tmp_path / "files")], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=os.environ.copy())
  assert result.returncode == 0, result.stderr
  assert f"# {name}:default" in result.stdout
