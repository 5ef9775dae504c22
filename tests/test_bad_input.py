"""The bad-input battery: what users get wrong, fed to every entry point.

Each test feeds one mistake (a missing file, a truncated row, a NaN, an id
outside the vocabulary, an empty split, a fully masked list, an unmeetable
quota, a bad config, a workdir of another config) and asserts either a clear
error that says what is wrong and where (file, line, column, key, category,
split) or the documented handling, and that no row disappears without being
counted. Fixtures are written in the official file formats into ``tmp_path``.
docs/reliability.md lists every case, how it is handled and the test here
that covers it; the checkpoint-side cases live in tests/train/.
"""

import csv
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax import ops, rerank
from hgrank_jax.blend import calibration, mixer, pacing
from hgrank_jax.data import ArrayBatcher, CategoricalFeature, Dataset, FeatureSpec, NumericFeature, load_dataset
from hgrank_jax.data.official import taobao
from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.official import kuairand
from hgrank_jax.data.official import kuairand_sig

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "kuairand_pure"
LOG_STANDARD = "log_standard_4_08_to_4_21_pure.csv"
LOG_RANDOM = "log_random_4_22_to_5_08_pure.csv"


# --- fixtures in the official formats -------------------------------------------------------

def _ids(path, key):
  with open(path, newline="") as f:
    return [int(row[key]) for row in csv.DictReader(f)]


def _log_row(user, video, serial, is_rand):
  row = {name: 0 for name in kuairand.LOG_HEADER}
  row.update(user_id=user, video_id=video, date=20220408, hourmin=1130,
             time_ms=1649390000000 + serial, is_click=serial % 2, long_view=(serial // 2) % 2,
             is_like=0, is_rand=is_rand, tab=serial % 3, duration_ms=9000)
  return [row[c] for c in kuairand.LOG_HEADER]


def write_kuairand(directory, rows=(20, 10), header=kuairand.LOG_HEADER, rename=None):
  """The Pure feature sample plus one standard and one random log; returns the log paths.

  ``header`` orders the log columns; ``rename`` maps official names to the ones written.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
    shutil.copy(FIXTURE / name, directory / name)
  users = _ids(FIXTURE / "user_features_pure.csv", "user_id")
  videos = _ids(FIXTURE / "video_features_basic_pure.csv", "video_id")
  paths, serial = [], 0
  for name, count in ((LOG_STANDARD, rows[0]), (LOG_RANDOM, rows[1])):
    with open(directory / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow([(rename or {}).get(c, c) for c in header])
      for _ in range(count):
        full = dict(zip(kuairand.LOG_HEADER, _log_row(users[serial % len(users)],
                                                      videos[serial % len(videos)], serial,
                                                      int("random" in name))))
        writer.writerow([full[c] for c in header])
        serial += 1
    paths.append(directory / name)
  return paths


def _append(path, text):
  with open(path, "a", newline="") as f:
    f.write(text)


def _replace_line(path, line_number, text):
  lines = pathlib.Path(path).read_text().splitlines(keepends=True)
  lines[line_number - 1] = text
  pathlib.Path(path).write_text("".join(lines))


def write_movielens_100k(directory, ratings):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
  flags = "|".join(["0", "1"] + ["0"] * 17)
  (directory / "u.item").write_bytes("".join(
      f"{m}|Film {m} (1995)|01-Jan-1995||http://x|{flags}\n" for m in (1, 2, 3)).encode("latin-1"))
  (directory / "u.user").write_text("".join(f"{u}|30|M|writer|85711\n" for u in (1, 2, 3)))


def write_taobao_ad(directory, sample_rows, price="170.0"):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "raw_sample.csv").write_text("user,time_stamp,adgroup_id,pid,nonclk,clk\n"
                                            + "".join(r + "\n" for r in sample_rows))
  (directory / "ad_feature.csv").write_text(
      "adgroup_id,cate_id,campaign_id,customer,brand,price\n"
      f"1,6406,83237,1,95471,{price}\n3,4520,387991,6,247789,199.0\n")
  (directory / "user_profile.csv").write_text(
      "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
      "occupation,new_user_class_level \n7,0,5,2,4,,3,0,2\n")


def write_sig(directory, train_rows):
  """The bundled subset's format: space-separated ``user item label`` rows per split."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "train.txt").write_text(train_rows)
  (directory / "valid.txt").write_text("0 1 1\n1 2 0\n")
  (directory / "test.txt").write_text("0 2 0\n1 1 1\n")
  return directory


@pytest.fixture
def kuairand_dir(tmp_path):
  directory = tmp_path / "KuaiRand-Pure" / "data"
  write_kuairand(directory)
  return directory


# --- 1. missing manual files ----------------------------------------------------------------

OFFICIAL = ("kuairand:pure", "kuairand:1k", "kuairand:27k", "movielens:100k", "movielens:1m",
            "taobao_ad", "taobao_userbehavior")


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_dataset_without_manual_dir_names_the_files_and_the_source(name):
  with pytest.raises(ValueError, match="needs manual_dir=DIR") as error:
    load_dataset(name)
  assert "https://" in str(error.value)  # where to obtain the files


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_dataset_with_a_wrong_dir_lists_every_missing_file(name, tmp_path):
  (tmp_path / "unrelated.csv").write_text("a,b\n1,2\n")
  with pytest.raises(FileNotFoundError, match="MISSING") as error:
    load_dataset(name, manual_dir=tmp_path)
  assert str(tmp_path) in str(error.value)


def test_nonexistent_manual_dir_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="4 expected file"):
    load_dataset("kuairand:pure", manual_dir=tmp_path / "no_such_dir")


def test_one_missing_file_is_singled_out(kuairand_dir):
  (kuairand_dir / "video_features_basic_pure.csv").unlink()
  with pytest.raises(FileNotFoundError) as error:
    kuairand.read(kuairand_dir, "pure")
  message = str(error.value)
  assert "1 expected file(s) missing" in message
  assert "MISSING video_features_basic_pure.csv" in message
  assert "found   user_features_pure.csv" in message


def test_data_stats_without_manual_dir_exits_with_one_message():
  result = subprocess.run([sys.executable, "-m", "launch.data_stats", "--dataset", "movielens:1m"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "launch.data_stats: error: movielens:1m needs manual_dir=DIR" in result.stderr
  assert "Traceback" not in result.stderr


def test_bundled_file_missing_names_file_and_directory(tmp_path):
  directory = write_sig(tmp_path / "sig", "0 1 1\n")
  (directory / "valid.txt").unlink()
  with pytest.raises(FileNotFoundError, match=r"valid\.txt is missing"):
    kuairand_sig.load("given", data_dir=directory)


# --- 2. truncated or malformed rows ---------------------------------------------------------

def test_truncated_last_row_names_file_and_line_or_is_counted(kuairand_dir):
  log = kuairand_dir / LOG_STANDARD
  _append(log, "0,1,20220408,11")  # the download stopped mid-row: 21 data rows + header
  with pytest.raises(csv_core.CsvFormatError,
                     match=rf"{LOG_STANDARD}: line 22: expected 19 fields .* found 4"):
    kuairand.read(kuairand_dir, "pure")
  _, columns, info = kuairand.read(kuairand_dir, "pure", skip_malformed=True)
  assert info["skipped_rows"] == {LOG_STANDARD: {"wrong_field_count": 1}}
  assert len(columns["user_id"]) == 30  # every well-formed row kept, the bad one counted


def test_non_numeric_id_names_file_line_column_and_value(kuairand_dir):
  _replace_line(kuairand_dir / LOG_RANDOM, 4, ",".join(
      ["abc"] + [str(v) for v in _log_row(0, 0, 0, 1)[1:]]) + "\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=rf"{LOG_RANDOM}: line 4: column 'user_id' value 'abc' is not a number"):
    kuairand.read(kuairand_dir, "pure")


def test_id_beyond_int64_is_a_format_error_not_an_overflow(kuairand_dir):
  _replace_line(kuairand_dir / LOG_RANDOM, 2, ",".join(
      ["99999999999999999999"] + [str(v) for v in _log_row(0, 0, 0, 1)[1:]]) + "\n")
  with pytest.raises(csv_core.CsvFormatError, match=r"line 2: column 'user_id' value '9+'"):
    kuairand.read(kuairand_dir, "pure")


def test_unclosed_quote_does_not_swallow_the_following_rows(kuairand_dir):
  # A quote opened in line 3 and never closed would fold every later row into one
  # field (Python's csv reader does so silently); the reader refuses instead.
  path = kuairand_dir / LOG_STANDARD
  lines = path.read_text().splitlines(keepends=True)
  lines[2] = lines[2].rsplit(",", 1)[0] + ',"' + lines[2].rsplit(",", 1)[1]
  path.write_text("".join(lines))
  with pytest.raises(csv_core.CsvFormatError,
                     match=rf"{LOG_STANDARD}: lines 3-21: a quoted field is never closed"):
    kuairand.read(kuairand_dir, "pure")
  _, columns, info = kuairand.read(kuairand_dir, "pure", skip_malformed=True)
  assert info["skipped_rows"] == {LOG_STANDARD: {"unclosed_quote": 19}}
  assert len(columns["user_id"]) == 1 + 10  # line 2 and the random log; 19 lines counted


def test_unclosed_quote_with_skip_malformed_counts_every_swallowed_line(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text('a,b\n1,x\n2,"y\n3,z\n4,w\n')
  report = csv_core.MalformedRows()
  columns = csv_core.read_csv(path, {"a": "int", "b": "str"}, skip_malformed=True, report=report)
  assert columns["a"].tolist() == [1]
  assert report.counts == {"t.csv": {"unclosed_quote": 3}}
  assert report.first_line == {"t.csv": {"unclosed_quote": 3}}


def test_file_cut_inside_a_quoted_field_is_an_error(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text('a,b\n1,x\n2,"[10,1')
  with pytest.raises(csv_core.CsvFormatError, match=r"line 3: a quoted field .* file ends inside"):
    csv_core.read_csv(path, {"a": "int", "b": "str"})


def test_header_only_log_is_an_error(kuairand_dir):
  (kuairand_dir / LOG_RANDOM).write_text(",".join(kuairand.LOG_HEADER) + "\n")
  with pytest.raises(csv_core.CsvFormatError, match=rf"{LOG_RANDOM}: the file has no data rows"):
    kuairand.read(kuairand_dir, "pure")


def test_label_out_of_range_names_file_and_line(kuairand_dir):
  row = _log_row(0, 0, 0, 0)
  row[kuairand.LOG_HEADER.index("is_click")] = 2
  _replace_line(kuairand_dir / LOG_STANDARD, 6, ",".join(map(str, row)) + "\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=rf"{LOG_STANDARD}: line 6: hourmin, tab, is_rand or a label out of range"):
    kuairand.read(kuairand_dir, "pure")


def test_movielens_row_with_a_missing_field(tmp_path):
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758), (2, 2, 4, 874965759)])
  _append(directory / "u.data", "3\t3\t4\n")
  with pytest.raises(csv_core.CsvFormatError, match=r"u\.data: line 3: expected 4 fields"):
    load_dataset("movielens:100k", manual_dir=directory)


def test_movielens_rating_outside_1_to_5(tmp_path):
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758), (2, 2, 7, 874965759)])
  with pytest.raises(csv_core.CsvFormatError, match=r"u\.data: line 2: rating outside 1\.\.5"):
    load_dataset("movielens:100k", manual_dir=directory)


def test_bundled_format_row_with_two_columns(tmp_path):
  directory = write_sig(tmp_path / "sig", "0 1 1\n1 2\n")
  with pytest.raises(ValueError, match=r"train\.txt"):
    kuairand_sig.load("given", data_dir=directory)


def test_file_in_another_encoding_names_the_first_bad_line(kuairand_dir):
  path = kuairand_dir / "video_features_basic_pure.csv"
  lines = path.read_bytes().splitlines(keepends=True)
  lines[4] = lines[4].replace(b"NORMAL", "NORMAL\u00e9".encode("latin-1"))
  path.write_bytes(b"".join(lines))
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"video_features_basic_pure\.csv: line 5: not valid utf-8 text"):
    kuairand.read(kuairand_dir, "pure")


def test_compressed_archive_renamed_to_csv_is_named(kuairand_dir):
  (kuairand_dir / LOG_RANDOM).write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xed\xbd")
  with pytest.raises(csv_core.CsvFormatError, match=rf"{LOG_RANDOM}: line 1: not valid utf-8 "
                                                    r"text .*compressed archive"):
    kuairand.read(kuairand_dir, "pure")


def test_side_table_repeating_an_id_names_both_lines(tmp_path):
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758), (2, 2, 4, 874965759)])
  _append(directory / "u.user", "2|40|F|artist|10001\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"u\.user: lines 2 and 4: user 2 appears more than once"):
    load_dataset("movielens:100k", manual_dir=directory)
  write_taobao_ad(tmp_path / "taobao", ["7,1494137644,1,430548_1007,1,0"])
  _append(tmp_path / "taobao" / "ad_feature.csv", "1,1,1,1,1,1.0\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"ad_feature\.csv: lines 2 and 4: adgroup_id 1 appears more than once"):
    load_dataset("taobao_ad", manual_dir=tmp_path / "taobao")


def test_unknown_behaviour_type_is_named(tmp_path):
  (tmp_path / "UserBehavior.csv").write_text("1,10,100,pv,1511544070\n1,11,100,click,1511544071\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"UserBehavior\.csv: line 2: behavior_type not one of"):
    load_dataset("taobao_userbehavior", manual_dir=tmp_path)


# --- 3. wrong headers -----------------------------------------------------------------------

def test_header_without_an_expected_column_names_it(tmp_path):
  write_kuairand(tmp_path, rename={"is_click": "click"})
  with pytest.raises(csv_core.CsvFormatError,
                     match=rf"{LOG_STANDARD}: line 1: header .* lacks the expected column\(s\) "
                           r"\['is_click'\]"):
    kuairand.read(tmp_path, "pure")


def test_header_naming_a_column_twice_is_ambiguous(tmp_path):
  header = ("user_id",) + kuairand.LOG_HEADER
  paths = write_kuairand(tmp_path)
  text = paths[0].read_text().splitlines(keepends=True)
  text[0] = ",".join(header) + "\n"
  text[1:] = ["7," + line for line in text[1:]]
  paths[0].write_text("".join(text))
  with pytest.raises(csv_core.CsvFormatError, match=r"names column\(s\) \['user_id'\] more than once"):
    kuairand.read(tmp_path, "pure")


def test_reordered_header_is_read_by_name(tmp_path):
  write_kuairand(tmp_path / "a")
  write_kuairand(tmp_path / "b", header=tuple(reversed(kuairand.LOG_HEADER)))
  _, columns_a, _ = kuairand.read(tmp_path / "a", "pure")
  _, columns_b, _ = kuairand.read(tmp_path / "b", "pure")
  for name, values in columns_a.items():
    np.testing.assert_array_equal(values, columns_b[name], err_msg=name)


def test_headerless_file_given_a_header_fails_on_line_one(tmp_path):
  # MovieLens' u.data has no header; a user who adds one gets line 1 named.
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758)])
  (directory / "u.data").write_text("user\titem\trating\ttimestamp\n1\t1\t5\t874965758\n")
  with pytest.raises(csv_core.CsvFormatError, match=r"u\.data: line 1: column 'user' value 'user'"):
    load_dataset("movielens:100k", manual_dir=directory)


# --- 4. NaN and inf numbers -----------------------------------------------------------------

def test_nan_and_inf_side_numbers_become_unknown_and_are_counted(kuairand_dir):
  path = kuairand_dir / "user_features_pure.csv"
  rows = list(csv.reader(path.open(newline="")))
  column = rows[0].index("follow_user_num")
  for i, value in ((1, "nan"), (2, "inf"), (3, "")):
    rows[i][column] = value
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  _, columns, info = kuairand.read(kuairand_dir, "pure")
  assert np.all(np.isfinite(columns["follow_user_num"]))
  assert info["unknown_values"]["user_features"]["follow_user_num"] == 3


def test_inf_price_becomes_unknown_and_is_counted(tmp_path):
  write_taobao_ad(tmp_path, ["7,1494137644,1,430548_1007,1,0", "7,1494137645,3,430548_1007,0,1"],
                  price="inf")
  _, columns, info = taobao.read_ad(tmp_path)
  assert np.all(np.isfinite(columns["price"]))
  assert info["unknown_values"]["ad_feature"]["price"] == 1


def _numeric_spec():
  return FeatureSpec(categorical=(CategoricalFeature("user_id", 4, tower="user"),),
                     numeric=(NumericFeature("x"),), labels=("label",), user_field="user_id")


@pytest.mark.parametrize("column", ["x", "label"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_a_dataset_column_names_split_column_and_row(column, bad):
  columns = {"user_id": np.array([0, 1, 2]), "x": np.array([1.0, 2.0, 3.0]),
             "label": np.array([0.0, 1.0, 0.0])}
  columns[column] = columns[column].copy()
  columns[column][2] = bad
  with pytest.raises(ValueError, match=rf"d\[train\]: \w+ column '{column}' has 1 row\(s\) with "
                                       r"NaN or inf, first at row 2"):
    Dataset("d", _numeric_spec(), {"train": columns})


def test_nan_score_in_calibration_is_named_eagerly_and_left_out_under_jit():
  scores = np.linspace(-2, 2, 20)
  labels = (np.arange(20) % 3 == 0).astype(float)
  bad = scores.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match=r"1 score\(s\) are NaN or inf .* first at row 3"):
    calibration.fit("platt", bad, labels)
  params = jax.jit(calibration.fit_platt)(bad, labels)
  assert np.all(np.isfinite(np.asarray(calibration.apply_platt(params, scores))))
  # Leaving the row out under jit equals masking it eagerly.
  where = np.arange(20) != 3
  expected = calibration.fit("platt", scores, labels, where=where)
  np.testing.assert_allclose(params["slope"], expected["slope"], rtol=1e-5)


def test_calibration_label_outside_0_1_is_named():
  with pytest.raises(ValueError, match=r"1 label\(s\) outside \[0, 1\], first at row 1"):
    calibration.fit("isotonic", np.arange(3.0), np.array([0.0, 5.0, 1.0]))


def test_nan_score_in_a_business_queue_is_named():
  with pytest.raises(ValueError, match="NaN score among valid queue entries"):
    mixer.merge_queues(np.array([[[0.9, np.nan], [0.5, 0.1]]]), 2)


def test_nan_candidate_scores_rank_last_in_rerankers():
  # dpp_greedy is left out: a NaN quality stops its list at the first slot (all
  # -1); reported for hgrank_jax/rerank/diversity.py, see docs/reliability.md.
  rng = np.random.default_rng(0)
  scores = rng.random((1, 6)).astype(np.float32)
  scores[0, 0] = np.nan
  embeddings = rng.random((1, 6, 4)).astype(np.float32)
  categories = np.array([[0, 1, 0, 1, 2, 2]])
  for picks in (rerank.mmr(scores, embeddings, 5),
                rerank.calibrated(scores, np.eye(3)[categories], np.ones((1, 3)) / 3, 5),
                rerank.coverage(scores, categories, 5, num_categories=3),
                rerank.constrained(scores, categories, 5, num_categories=3).indices):
    picks = np.asarray(picks)[0]
    assert 0 not in picks.tolist() and np.all(picks >= 0), picks


def test_nan_in_padding_does_not_leak_into_soft_ranks():
  scores = jnp.array([[3.0, 1.0, jnp.nan, jnp.inf]])
  where = jnp.array([[True, True, False, False]])
  for method in ("softsort", "neuralsort", "fast"):
    ranks = ops.soft_rank(scores, method=method, temperature=0.1, where=where)
    assert np.all(np.isfinite(np.asarray(ranks))), method
    grad = jax.grad(lambda s: ops.soft_rank(s, method=method, where=where)[0, 0])(scores)
    assert np.all(np.isfinite(np.asarray(grad))), method


# --- 5. ids outside the vocabulary ----------------------------------------------------------

@pytest.mark.parametrize("column,file_kind", [("user_id", "user"), ("video_id", "video")])
def test_log_id_absent_from_the_features_file_raises_or_is_counted(kuairand_dir, column,
                                                                   file_kind):
  row = _log_row(0, 0, 0, 0)
  row[kuairand.LOG_HEADER.index(column)] = 987654
  _replace_line(kuairand_dir / LOG_STANDARD, 3, ",".join(map(str, row)) + "\n")
  reason = f"{column} not in the {file_kind} features file"
  with pytest.raises(csv_core.CsvFormatError, match=rf"{LOG_STANDARD}: line 3: {reason}"):
    kuairand.read(kuairand_dir, "pure")
  _, columns, info = kuairand.read(kuairand_dir, "pure", skip_malformed=True)
  assert info["skipped_rows"] == {LOG_STANDARD: {reason: 1}}
  assert len(columns["user_id"]) == 29


def test_impression_of_an_unknown_ad_is_named(tmp_path):
  write_taobao_ad(tmp_path, ["7,1494137644,1,430548_1007,1,0", "7,1494137645,99,430548_1007,0,1"])
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"raw_sample\.csv: line 3: adgroup_id not in ad_feature\.csv"):
    load_dataset("taobao_ad", manual_dir=tmp_path)


def test_rating_of_an_unknown_movie_is_named(tmp_path):
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758), (2, 42, 4, 874965759)])
  with pytest.raises(csv_core.CsvFormatError, match=r"line 2: item not in the movies file"):
    load_dataset("movielens:100k", manual_dir=directory)


def test_bundled_format_item_beyond_the_catalogue(tmp_path):
  directory = write_sig(tmp_path / "sig", f"0 1 1\n3 {kuairand_sig.NUM_ITEMS} 0\n")
  with pytest.raises(ValueError, match=rf"train\.txt: line 2: item id 4373\.0 is not an integer "
                                       rf"in \[0, {kuairand_sig.NUM_ITEMS}\)"):
    kuairand_sig.load("given", data_dir=directory)


def test_dataset_id_outside_the_vocabulary_names_split_and_column():
  columns = {"user_id": np.array([0, 7]), "x": np.array([1.0, 2.0]), "label": np.array([0.0, 1.0])}
  with pytest.raises(ValueError, match=r"d\[valid\]: column 'user_id' has ids in \[0, 7\], "
                                       r"outside \[0, 4\)"):
    Dataset("d", _numeric_spec(), {"valid": columns})


def test_category_outside_a_given_vocabulary_goes_to_the_counted_unknown_bucket():
  ids, vocabulary, unknown = csv_core.encode_categories(
      np.array(["a", "b", "zzz", "NULL", "-124"], dtype=object), vocabulary=["a", "b"])
  assert ids.tolist() == [1, 2, 0, 0, 0] and unknown == 3 and vocabulary == ["a", "b"]


def test_exposure_category_outside_range_is_named():
  with pytest.raises(ValueError, match="categories"):
    ops.soft_category_exposure(jnp.ones((1, 4)), jnp.array([[0, 1, 5, 1]]), 3, 2)


# --- 6. empty splits ------------------------------------------------------------------------

def test_empty_split_is_refused_naming_it():
  columns = {"user_id": np.array([0, 1]), "x": np.array([1.0, 2.0]), "label": np.array([0.0, 1.0])}
  empty = {k: v[:0] for k, v in columns.items()}
  with pytest.raises(ValueError, match=r"d\[valid\]: the split has no rows.*'valid': 0"):
    Dataset("d", _numeric_spec(), {"train": columns, "valid": empty, "test": columns})


def test_official_data_too_small_for_a_split_names_the_split(tmp_path):
  # Two ratings of two users: per-user 70/10/20 leaves valid and test empty.
  directory = tmp_path / "ml-100k"
  write_movielens_100k(directory, [(1, 1, 5, 874965758), (2, 2, 4, 874965759)])
  with pytest.raises(ValueError, match=r"movielens:100k\[valid\]: the split has no rows"):
    load_dataset("movielens:100k", manual_dir=directory)


def test_batcher_over_no_rows_is_an_error():
  with pytest.raises(ValueError, match="the columns are empty"):
    ArrayBatcher({"x": np.zeros(0)}, 8)


# --- 7. lists with every entry masked -------------------------------------------------------

def _masked_inputs():
  rng = np.random.default_rng(1)
  scores = rng.random((2, 6)).astype(np.float32)
  embeddings = rng.random((2, 6, 4)).astype(np.float32)
  categories = np.array([[0, 1, 0, 1, 2, 2]] * 2)
  return scores, embeddings, categories, np.zeros((2, 6), bool)


RERANKERS = {
    "mmr": lambda s, e, c, w: rerank.mmr(s, e, 3, where=w),
    "dpp_greedy": lambda s, e, c, w: rerank.dpp_greedy(s, e, 3, where=w),
    "calibrated": lambda s, e, c, w: rerank.calibrated(s, np.eye(3)[c], np.ones((2, 3)) / 3, 3,
                                                       where=w),
    "coverage": lambda s, e, c, w: rerank.coverage(s, c, 3, num_categories=3, where=w),
    "constrained": lambda s, e, c, w: rerank.constrained(s, c, 3, num_categories=3,
                                                         where=w).indices,
    "exact": lambda s, e, c, w: rerank.exact(s, c, 3, num_categories=3, where=w).indices,
}


@pytest.mark.parametrize("name", sorted(RERANKERS))
def test_fully_masked_list_gives_all_minus_one(name):
  indices = np.asarray(RERANKERS[name](*_masked_inputs()))
  assert indices.shape == (2, 3)
  assert np.all(indices == -1), indices


def test_fully_masked_list_under_jit_gives_all_minus_one():
  scores, embeddings, _, where = _masked_inputs()
  indices = jax.jit(lambda s, e, w: rerank.mmr(s, e, 3, where=w))(scores, embeddings, where)
  assert np.all(np.asarray(indices) == -1)


def test_fully_masked_soft_sorting_is_finite_and_selects_nothing():
  scores, _, categories, where = _masked_inputs()
  for method in ("softsort", "neuralsort", "fast", "hard"):
    ranks = ops.soft_rank(scores, method=method, where=where)
    top = ops.soft_topk_mask(scores, 2, method=method, where=where)
    assert np.all(np.isfinite(np.asarray(ranks))), method
    np.testing.assert_allclose(np.asarray(top).sum(-1), 0.0, atol=1e-6, err_msg=method)
  exposure = ops.soft_category_exposure(scores, categories, 3, 2, method="fast", where=where)
  np.testing.assert_allclose(np.asarray(exposure), 0.0, atol=1e-6)


def test_fully_masked_losses_are_zero_not_nan():
  from hgrank_jax import losses
  logits, labels = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0.0, 1.0, 0.0]])
  where = jnp.zeros((1, 3), bool)
  for name in ("list_ce", "pairwise_logistic", "softmax_ce"):
    assert float(getattr(losses, name)(logits, labels, where=where)) == 0.0, name
  value = losses.group_ce(logits[0], labels[0], codes=jnp.zeros((3, 2), jnp.int32),
                          log_sigma=jnp.zeros(2), where=where[0])
  assert float(value) == 0.0


def test_fully_masked_business_queues_leave_every_slot_empty():
  business, position, _ = mixer.merge_queues(np.random.rand(2, 3, 4), 3,
                                             where=np.zeros((2, 3, 4), bool))
  assert np.all(np.asarray(business) == -1) and np.all(np.asarray(position) == -1)


def test_calibration_with_every_row_masked_is_an_error():
  with pytest.raises(ValueError, match="no row to fit"):
    calibration.fit("bucketed", np.arange(4.0), np.ones(4), where=np.zeros(4, bool))


# --- 8. quotas that cannot be met -----------------------------------------------------------

SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], np.float32)
CATEGORIES = np.array([[0, 1, 0, 1, 2, 2]])


@pytest.mark.parametrize("solver", [rerank.constrained, rerank.exact], ids=["greedy", "exact"])
@pytest.mark.parametrize("kwargs,message", [
    (dict(min_count=np.array([0, 0, 3])),
     r"category 2 needs at least 3 items but only 2 valid candidates have it \(short by 1\)"),
    (dict(min_count=np.array([2, 2, 1])),
     r"minimum counts sum to 5 but the list has only 4 slots \(short by 1\)"),
    (dict(max_count=np.array([1, 1, 1])), r"caps allow only 3 of the 4 slots \(short by 1\)"),
], ids=["category_short", "minimums_over_slots", "caps_under_slots"])
def test_unmeetable_quota_names_list_category_and_shortfall(solver, kwargs, message):
  with pytest.raises(ValueError, match=r"infeasible constraints in 1 list\(s\); list 0: " + message):
    solver(SCORES, CATEGORIES, 4, num_categories=3, **kwargs)


def test_unmeetable_quota_under_jit_returns_a_false_feasibility_flag():
  fn = jax.jit(lambda s, c: rerank.constrained(s, c, 4, min_count=jnp.array([0, 0, 3]),
                                               num_categories=3))
  result = fn(SCORES, CATEGORIES)
  assert not bool(result.feasible[0])
  assert np.all(np.asarray(result.indices) >= -1)


def test_unmeetable_quota_best_effort_returns_the_flag_instead_of_raising():
  for solver in (rerank.constrained, rerank.exact):
    result = solver(SCORES, CATEGORIES, 4, min_count=np.array([0, 0, 3]), num_categories=3,
                    best_effort=True)
    assert not bool(np.asarray(result.feasible)[0]), solver.__name__


def test_unmeetable_load_targets_are_named():
  with pytest.raises(ValueError, match=r"minimum shares sum to 1\.300 > 1\.0"):
    pacing.validate_targets(floors=[0.7, 0.6])
  with pytest.raises(ValueError, match=r"caps sum to 0\.500 < 1\.0"):
    pacing.validate_targets(caps=[0.2, 0.3])


# --- 9. configs with unknown keys or wrong types --------------------------------------------

def _launch_train(tmp_path, *overrides):
  workdir = tmp_path / "workdir"
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config", "configs/kuairand_sig.py:runlocal",
       "--workdir", str(workdir), *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  return result, workdir


def test_launch_with_an_unknown_config_key_fails_before_anything_runs(tmp_path):
  result, workdir = _launch_train(tmp_path, "--config.nonexistent=1")
  assert result.returncode != 0
  assert "nonexistent" in result.stderr.splitlines()[-1]
  assert not workdir.exists()  # nothing was loaded, compiled or written
  assert "Initialised" not in result.stdout


def test_launch_with_a_wrongly_typed_value_fails_naming_the_flag(tmp_path):
  result, workdir = _launch_train(tmp_path, "--config.batch_size=abc")
  assert result.returncode != 0
  assert "--config.batch_size=abc" in result.stderr
  assert not workdir.exists()


def _runlocal_config(arg="runlocal"):
  """``configs/kuairand_sig.py:<arg>`` as ``--config`` loads it."""
  spec = importlib.util.spec_from_file_location("kuairand_sig_config",
                                                ROOT / "configs" / "kuairand_sig.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_wrong_type_assignment_to_a_locked_config_is_refused():
  config = _runlocal_config()
  config.lock()
  with pytest.raises(TypeError):
    config.batch_size = "abc"
  with pytest.raises(AttributeError, match="nonexistent"):
    config.nonexistent = 1


@pytest.mark.parametrize("key,value,message", [
    ("learning_rate", -1.0, r"config\.learning_rate must be > 0"),
    ("batch_size", 0, r"config\.batch_size must be >= 1"),
    ("early_stopping.metric", "accuracy", r"config\.early_stopping\.metric must be one of"),
    ("data_source", "disk", r"config\.data_source must be one of"),
    ("data_source", "streaming", r"config\.data_source='streaming' needs config\.data_path"),
])
def test_out_of_range_config_values_fail_before_the_workdir_is_touched(tmp_path, key, value,
                                                                       message):
  from hgrank_jax.train.loop import train_and_evaluate
  config = _runlocal_config()
  if key.split(".")[0] in config:
    config.update_from_flattened_dict({key: value})
  else:
    config[key] = value  # keys the config may not define yet; the loop reads them with get()
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(config, tmp_path / "workdir")
  assert not (tmp_path / "workdir").exists()


def test_unknown_config_variant_is_named():
  with pytest.raises(ValueError, match=r"unknown config variant 'runlokal'; known: runlocal"):
    _runlocal_config("runlokal")


@pytest.mark.parametrize("name,message", [
    ("kuairand_sgi:paper", r"unknown dataset 'kuairand_sgi'; available: .*kuairand_sig"),
    ("kuairand_sig:dev", r"dataset 'kuairand_sig' has no view 'dev'; views are \['given', 'paper'\]"),
])
def test_unknown_dataset_or_view_is_named(name, message):
  with pytest.raises(ValueError, match=message):
    load_dataset(name)


def test_batch_not_divisible_by_the_devices_fails_before_compiling(tmp_path):
  from hgrank_jax.train.loop import train_and_evaluate
  config = _runlocal_config()
  config.batch_size = 100  # conftest gives 8 CPU devices
  with pytest.raises(ValueError, match=r"global batch size 100 is not divisible by the number "
                                       r"of devices 8 .* \(e\.g\. 104\)"):
    train_and_evaluate(config, tmp_path / "workdir")


def test_more_devices_than_exist_is_named(tmp_path):
  from hgrank_jax.train.loop import train_and_evaluate
  config = _runlocal_config()
  config.num_devices = 64
  with pytest.raises(ValueError, match=r"config\.num_devices=64 but 8 devices are available"):
    train_and_evaluate(config, tmp_path / "workdir")


# --- 10. a workdir from another config ------------------------------------------------------

def test_workdir_of_another_config_is_refused_naming_the_keys(tmp_path):
  from hgrank_jax.train import checkpoint
  from hgrank_jax.train.loop import train_and_evaluate
  first = _runlocal_config("runlocal")
  checkpoint.prepare_workdir(tmp_path, first.to_dict())  # what a first run leaves behind
  second = _runlocal_config("runlocal,groupce")
  second.learning_rate = 0.01
  with pytest.raises(ValueError) as error:
    train_and_evaluate(second, tmp_path)
  message = str(error.value)
  for key in ("learning_rate", "objective.name", "objective.loss"):
    assert key in message, message
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 1e-3


def test_tfds_dir_prepared_with_other_options_is_refused(kuairand_dir, tmp_path):
  from hgrank_jax.data.official import tfds_builders
  data_dir = tmp_path / "tfds"
  with pytest.raises(FileNotFoundError, match=r"kuairand:pure is not prepared in .*prepare\("):
    tfds_builders.load_prepared("kuairand", "pure", data_dir=data_dir)
  # 30 rows over 42 users: every user has one row, so valid and test would be empty.
  with pytest.raises(ValueError, match=r"split\(s\) \['valid', 'test'\] get no rows"):
    tfds_builders.prepare("kuairand", "pure", manual_dir=kuairand_dir, data_dir=data_dir)
  write_kuairand(tmp_path / "larger", rows=(400, 200))
  tfds_builders.prepare("kuairand", "pure", manual_dir=tmp_path / "larger", data_dir=data_dir,
                        split_seed=0)
  with pytest.raises(ValueError, match=r"was prepared with split_seed=0.*asked for split_seed=1.*"
                                       r"Use another data_dir"):
    tfds_builders.prepare("kuairand", "pure", manual_dir=tmp_path / "larger", data_dir=data_dir,
                          split_seed=1)
