"""The shared CSV core: official-format quirks, clear errors, counted skips."""

import numpy as np
import pytest

from hgrank_jax.data.formats import csv_core


def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding))
  return path


def test_quoted_commas_and_trailing_space_in_header(tmp_path):
  path = _write(tmp_path / "f.csv", 'id,bucket,score ,tag\n1,"[100,1k)",2.5,"3,7"\n2,0,,\n')
  out = csv_core.read_csv(path, {"id": "int", "bucket": "str", "score": "float", "tag": "str"})
  assert out["id"].tolist() == [1, 2] and out["id"].dtype == np.int64
  assert out["bucket"].tolist() == ["[100,1k)", "0"]
  assert out["score"][0] == 2.5 and np.isnan(out["score"][1])
  assert out["tag"].tolist() == ["3,7", ""]
  assert out["_line"].tolist() == [2, 3]


def test_no_header_multichar_delimiter_and_latin1(tmp_path):
  path = _write(tmp_path / "movies.dat", "1::Café (1995)::Comedy|Drama\n2::Heat (1995)::Action\n",
                encoding="latin-1")
  out = csv_core.read_csv(path, {"movie": "int", "title": "str", "genres": "str"},
                          header=("movie", "title", "genres"), has_header=False, delimiter="::",
                          quoted=False, encoding="latin-1")
  assert out["movie"].tolist() == [1, 2]
  assert out["title"].tolist() == ["Café (1995)", "Heat (1995)"]
  assert out["genres"].tolist() == ["Comedy|Drama", "Action"]


def test_blank_lines_are_ignored_and_lines_counted(tmp_path):
  path = _write(tmp_path / "u.data", "1\t2\n\n3\t4\n")
  out = csv_core.read_csv(path, {"a": "int", "b": "int"}, header=("a", "b"), has_header=False,
                          delimiter="\t", quoted=False)
  assert out["a"].tolist() == [1, 3] and out["_line"].tolist() == [1, 3]


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    csv_core.read_csv(tmp_path / "nope.csv", {"a": "int"})


@pytest.mark.parametrize("text", ["", "a,b\n"])
def test_empty_file_is_an_error(tmp_path, text):
  path = _write(tmp_path / "e.csv", text)
  with pytest.raises(csv_core.CsvFormatError, match="e.csv: the file (is empty|has no data rows)"):
    csv_core.read_csv(path, {"a": "int"})


def test_wrong_header_names_the_missing_column(tmp_path):
  path = _write(tmp_path / "h.csv", "a,c\n1,2\n")
  with pytest.raises(csv_core.CsvFormatError, match=r"h.csv: line 1: header \['a', 'c'\] lacks "
                     r"the expected column\(s\) \['b'\]"):
    csv_core.read_csv(path, {"a": "int", "b": "int"})


def test_wrong_field_count_names_file_and_line(tmp_path):
  path = _write(tmp_path / "w.csv", "a,b\n1,2\n3\n4,5\n")
  with pytest.raises(csv_core.CsvFormatError, match="w.csv: line 3: expected 2 fields"):
    csv_core.read_csv(path, {"a": "int", "b": "int"})
  report = csv_core.MalformedRows()
  out = csv_core.read_csv(path, {"a": "int", "b": "int"}, skip_malformed=True, report=report)
  assert out["a"].tolist() == [1, 4] and out["b"].tolist() == [2, 5]
  assert report.to_info() == {"w.csv": {"wrong_field_count": 1}}
  assert report.first_line == {"w.csv": {"wrong_field_count": 3}} and report.total == 1


def test_non_numeric_id_names_file_line_and_value(tmp_path):
  path = _write(tmp_path / "n.csv", "a,b\n1,2\nx7,3\n4,abc\n5,6\n")
  with pytest.raises(csv_core.CsvFormatError,
                     match=r"n.csv: line 3: column 'a' value 'x7' is not a number \(1 such rows\)"):
    csv_core.read_csv(path, {"a": "int", "b": "int"})
  report = csv_core.MalformedRows()
  out = csv_core.read_csv(path, {"a": "int", "b": "int"}, skip_malformed=True, report=report)
  assert out["a"].tolist() == [1, 5] and out["b"].tolist() == [2, 6]
  assert out["_line"].tolist() == [2, 5]
  assert report.to_info() == {"n.csv": {"non_numeric_a": 1, "non_numeric_b": 1}}


def test_every_row_malformed_is_an_error_even_when_skipping(tmp_path):
  path = _write(tmp_path / "all.csv", "a\nx\ny\n")
  with pytest.raises(csv_core.CsvFormatError, match="every data row is malformed"):
    csv_core.read_csv(path, {"a": "int"}, skip_malformed=True, report=csv_core.MalformedRows())


def test_encode_categories_unknown_bucket_and_order():
  raw = np.asarray(["10", "2", "", "-124", "UNKNOWN", "NULL", "2.0", "1.0", "10"], dtype=object)
  ids, vocabulary, unknown = csv_core.encode_categories(raw)
  assert vocabulary == ["1", "2", "10"]  # numeric order; "2.0" is "2", "1.0" is "1"
  assert ids.tolist() == [3, 2, 0, 0, 0, 0, 2, 1, 3] and ids.dtype == np.int32
  assert unknown == 4
  text_ids, text_vocab, _ = csv_core.encode_categories(np.asarray(["b", "a", "(0,10]"], object))
  assert text_vocab == ["(0,10]", "a", "b"] and text_ids.tolist() == [3, 2, 1]
  fixed, _, unseen = csv_core.encode_categories(np.asarray(["a", "z"], object), ["a", "b"])
  assert fixed.tolist() == [1, 0] and unseen == 1


def test_lookup_and_dense_ids():
  positions, found = csv_core.lookup(np.asarray([30, 10, 99]), np.asarray([10, 20, 30]))
  assert positions[:2].tolist() == [2, 0] and found.tolist() == [True, True, False]
  dense, distinct = csv_core.dense_ids(np.asarray([500, 7, 500, 42]))
  assert dense.tolist() == [2, 0, 2, 1] and distinct.tolist() == [7, 42, 500]


def test_check_files_lists_every_expected_file(tmp_path):
  _write(tmp_path / "a_1.csv", "x\n1\n")
  expected = {"a_*.csv": "the a files", "b.csv": "the b file", "c.csv": "the c file"}
  with pytest.raises(FileNotFoundError) as error:
    csv_core.check_files(tmp_path, expected, dataset="demo", instructions="Get them at X.")
  message = str(error.value)
  assert "demo: 2 expected file(s) missing" in message
  assert "found   a_*.csv: the a files" in message
  assert "MISSING b.csv: the b file" in message and "MISSING c.csv: the c file" in message
  assert message.endswith("Get them at X.")
  _write(tmp_path / "b.csv", "x\n")
  _write(tmp_path / "c.csv", "x\n")
  found = csv_core.check_files(tmp_path, expected, dataset="demo", instructions="")
  assert found["a_*.csv"] == [tmp_path / "a_1.csv"]
