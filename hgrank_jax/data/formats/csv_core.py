"""The one CSV-reading core shared by every official-dataset builder.

Official recommendation logs come as delimited text with their own quirks: a
header with a trailing space (Taobao's ``user_profile.csv``), no header at all
(``UserBehavior.csv``, MovieLens), multi-character separators (MovieLens-1M's
``::``), quoted fields holding commas (KuaiRand's ``"[100,1k)"`` buckets and tag
lists), Latin-1 titles. :func:`read_csv` handles all of them and returns numpy
columns. Bad input is never dropped silently: a missing or empty file, a header
without an expected column, a row with the wrong number of fields or a
non-numeric (or beyond int64) value in an integer column, a header naming an
expected column twice, or a quote that is never closed (which would fold the
following rows into one field) raises :class:`CsvFormatError` naming the file,
line and problem (a file that does not decode, too, with its first bad line);
with ``skip_malformed=True`` such rows are skipped and
counted in a :class:`MalformedRows` report that the builders put in the
dataset info.

:func:`encode_categories` turns raw side-feature strings into dense ids with an
explicit unknown bucket (id 0) for empty values, ``NULL``/``UNKNOWN`` markers and
negative sentinels such as KuaiRand's ``-124``, and counts them.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np

INT, FLOAT, STR = "int", "float", "str"
# Raw values that mean "not known"; compared after stripping and lower-casing.
MISSING_MARKERS = frozenset({"", "null", "none", "nan", "unknown", "\\n"})
UNKNOWN_ID = 0


class CsvFormatError(ValueError):
  """A file that does not have the expected format; the message names file and line."""


@dataclasses.dataclass
class MalformedRows:
  """Rows skipped under ``skip_malformed=True``, counted per file and reason.

  Attributes:
    counts: file name -> reason -> number of skipped rows.
    first_line: file name -> reason -> first line number (1-based) with it.
  """

  counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  first_line: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

  def add(self, file_name: str, reason: str, line: int) -> None:
    per_file = self.counts.setdefault(file_name, {})
    per_file[reason] = per_file.get(reason, 0) + 1
    self.first_line.setdefault(file_name, {}).setdefault(reason, line)

  @property
  def total(self) -> int:
    return sum(sum(reasons.values()) for reasons in self.counts.values())

  def to_info(self) -> dict[str, dict[str, int]]:
    """A JSON-serialisable copy for a dataset's ``info``."""
    return {name: dict(reasons) for name, reasons in sorted(self.counts.items())}


class _LineTracker:
  """Iterates a text handle's lines and remembers the last one (for truncation checks)."""

  def __init__(self, handle):
    self._handle = handle
    self.last = ""

  def __iter__(self):
    for text in self._handle:
      self.last = text
      yield text


def _split_lines(handle, delimiter: str, quoted: bool, path: pathlib.Path,
                 skip_malformed: bool = False, report: "MalformedRows | None" = None
                 ) -> Iterable[tuple[int, list[str]]]:
  """Yields (1-based line number, fields) for every non-blank line.

  In quoted mode a record that runs over several physical lines, or a file that
  ends inside a quoted field, means an unclosed quote: the reader would
  otherwise fold the following rows into one field and lose them silently. It
  raises :class:`CsvFormatError` naming the lines, or with ``skip_malformed``
  counts every swallowed line as an ``unclosed_quote`` row.
  """
  if quoted:
    lines = _LineTracker(handle)
    reader = csv.reader(lines, delimiter=delimiter)
    previous_line = 0
    for fields in reader:
      line, previous_line = previous_line + 1, reader.line_num
      # An open quote folds lines into its field; at the end of the file the field
      # it leaves open is the record's last one and ends with the line break.
      spans = previous_line > line or (bool(fields) and fields[-1][-1:] in ("\n", "\r"))
      at_eof_in_quote = (not lines.last.endswith(("\n", "\r"))
                         and lines.last.count('"') % 2 == 1 and not spans)
      if spans or at_eof_in_quote:
        where = (f"lines {line}-{previous_line}" if previous_line > line else f"line {line}")
        if skip_malformed:
          for swallowed in range(line, previous_line + 1):
            report.add(path.name, "unclosed_quote", swallowed)
          continue
        raise CsvFormatError(
            f"{path}: {where}: a quoted field is never closed (unbalanced '\"'); the "
            + ("following rows were folded into one field" if previous_line > line
               else "file ends inside it")
            + ". Fix the quoting or pass skip_malformed=True to skip and count these lines.")
      if fields:
        yield line, fields
  else:
    for line, text in enumerate(handle, start=1):
      text = text.rstrip("\r\n")
      if text:
        yield line, text.split(delimiter)


def _convert(values: list[str], kind: str, column: str,
             path: pathlib.Path) -> tuple[np.ndarray, np.ndarray | None]:
  """Converts one column; returns (array, bool mask of unparsable rows or None)."""
  if kind == STR:
    return np.asarray([v.strip() for v in values], dtype=object), None
  if kind == INT:
    try:
      return np.asarray(values, dtype=np.str_).astype(np.int64), None
    except (ValueError, OverflowError):
      pass  # Fall back to a per-value pass that finds (and maybe skips) the bad rows.
    out = np.zeros(len(values), np.int64)
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
      try:
        out[i] = int(v.strip())
      except (ValueError, OverflowError):  # OverflowError: beyond int64
        bad[i] = True
    return out, bad
  if kind == FLOAT:
    out = np.full(len(values), np.nan, np.float64)
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
      v = v.strip()
      if v.lower() in MISSING_MARKERS:
        continue  # a missing float stays NaN; callers count and fill it
      try:
        out[i] = float(v)
      except ValueError:
        bad[i] = True
    return out, bad
  raise ValueError(f"column {column!r} of {path}: unknown kind {kind!r}")


def read_csv(path: pathlib.Path | str, columns: Mapping[str, str], *,
             header: Sequence[str] | None = None, has_header: bool = True, delimiter: str = ",",
             quoted: bool = True, encoding: str = "utf-8", skip_malformed: bool = False,
             report: MalformedRows | None = None) -> dict[str, np.ndarray]:
  """Reads the named columns of a delimited text file.

  Args:
    path: the file.
    columns: column name -> kind: "int" (int64, must parse), "float" (float64,
      missing markers become NaN) or "str" (stripped strings, object dtype).
    header: for files without a header line, the names of all fields in order.
    has_header: the first line names the fields (names are compared after
      stripping whitespace, so a trailing space in the official header is fine).
    delimiter: field separator; may be several characters (then ``quoted`` must
      be False).
    quoted: honour double quotes (commas inside quoted fields).
    encoding: text encoding (MovieLens uses latin-1).
    skip_malformed: skip rows with the wrong field count or unparsable numbers
      and count them in ``report``, instead of raising.
    report: where skipped rows are counted (required with skip_malformed).

  Returns:
    column name -> array ``[n]`` (int64, float64 or object), plus ``"_line"``
    (int64 ``[n]``, the 1-based line number of each row) for later checks.

  Raises:
    FileNotFoundError: the file does not exist.
    CsvFormatError: empty file, missing header column, or a malformed row (when
      not skipping), naming the file, line and problem.
  """
  path = pathlib.Path(path)
  if skip_malformed and report is None:
    raise ValueError("read_csv: skip_malformed=True needs a MalformedRows report")
  if len(delimiter) > 1 and quoted:
    raise ValueError("read_csv: a multi-character delimiter needs quoted=False")
  if not path.is_file():
    raise FileNotFoundError(f"{path}: file not found")
  try:
    return _read_csv(path, columns, header=header, has_header=has_header, delimiter=delimiter,
                     quoted=quoted, encoding=encoding, skip_malformed=skip_malformed,
                     report=report)
  except UnicodeDecodeError as e:
    line = _first_undecodable_line(path, encoding)
    raise CsvFormatError(
        f"{path}: line {line}: not valid {encoding} text ({e.reason} at byte "
        f"{e.object[e.start:e.start + 1]!r}); is it the official file, extracted (not a "
        "compressed archive) and in its original encoding?") from e


def _first_undecodable_line(path: pathlib.Path, encoding: str) -> int:
  """1-based number of the first line of ``path`` that does not decode."""
  with open(path, "rb") as handle:
    for line, raw in enumerate(handle, start=1):
      try:
        raw.decode(encoding)
      except UnicodeDecodeError:
        return line
  return 0


def _read_csv(path, columns, *, header, has_header, delimiter, quoted, encoding, skip_malformed,
              report):
  """:func:`read_csv` after its argument checks."""
  with open(path, newline="" if quoted else None, encoding=encoding) as handle:
    rows = _split_lines(handle, delimiter, quoted, path, skip_malformed, report)
    if has_header:
      first = next(rows, None)
      if first is None:
        raise CsvFormatError(f"{path}: the file is empty (expected a header line)")
      names = [name.strip().lstrip("\ufeff") for name in first[1]]
    else:
      if header is None:
        raise ValueError("read_csv: has_header=False needs the field names in `header`")
      names = list(header)
    missing = [c for c in columns if c not in names]
    if missing:
      raise CsvFormatError(f"{path}: line 1: header {names} lacks the expected column(s) {missing}")
    repeated = [c for c in columns if names.count(c) > 1]
    if repeated:
      raise CsvFormatError(f"{path}: line 1: header {names} names column(s) {repeated} more "
                           "than once; which one to read is ambiguous")
    positions = [names.index(c) for c in columns]
    width = len(names)
    raw: list[list[str]] = [[] for _ in columns]
    line_numbers: list[int] = []
    for line, fields in rows:
      if len(fields) != width:
        if skip_malformed:
          report.add(path.name, "wrong_field_count", line)
          continue
        raise CsvFormatError(f"{path}: line {line}: expected {width} fields "
                             f"({delimiter!r}-separated), found {len(fields)}")
      for values, position in zip(raw, positions):
        values.append(fields[position])
      line_numbers.append(line)
  if not line_numbers:
    raise CsvFormatError(f"{path}: the file has no data rows")
  lines = np.asarray(line_numbers, np.int64)
  out: dict[str, np.ndarray] = {}
  keep = np.ones(len(lines), bool)
  for (name, kind), values in zip(columns.items(), raw):
    array, bad = _convert(values, kind, name, path)
    if bad is not None and bad.any():
      if not skip_malformed:
        first_bad = int(np.argmax(bad))
        raise CsvFormatError(f"{path}: line {lines[first_bad]}: column {name!r} value "
                             f"{values[first_bad]!r} is not a number ({int(bad.sum())} such rows)")
      for line in lines[bad & keep]:
        report.add(path.name, f"non_numeric_{name}", int(line))
      keep &= ~bad
    out[name] = array
  out["_line"] = lines
  if not keep.all():
    out = {name: values[keep] for name, values in out.items()}
    if not len(out["_line"]):
      raise CsvFormatError(f"{path}: every data row is malformed")
  return out


def normalise_category(value: str) -> str:
  """Canonical text of a raw category: stripped, and "1.0" written as "1"."""
  value = value.strip()
  try:
    number = float(value)
  except ValueError:
    return value
  if np.isfinite(number) and number == int(number):
    return str(int(number))
  return value


def is_unknown(value: str) -> bool:
  """Empty, a missing marker (NULL, UNKNOWN, ...) or a negative integer sentinel."""
  if value.lower() in MISSING_MARKERS:
    return True
  return value.startswith("-") and value[1:].isdigit()


def sorted_vocabulary(values: Iterable[str]) -> list[str]:
  """Known values in a stable order: numeric order when all are integers, else text order."""
  distinct = set(values)
  if all(v.isdigit() for v in distinct):
    return sorted(distinct, key=int)
  return sorted(distinct)


def encode_categories(raw: np.ndarray, vocabulary: Sequence[str] | None = None
                      ) -> tuple[np.ndarray, list[str], int]:
  """Dense ids for raw category strings, with id 0 the explicit unknown bucket.

  Args:
    raw: strings ``[n]`` (object or str dtype).
    vocabulary: known values in id order (ids 1..len); None builds it from the
      known values of ``raw`` (see :func:`sorted_vocabulary`).

  Returns:
    (ids int32 ``[n]`` in ``[0, len(vocabulary) + 1)``, vocabulary, number of
    unknown rows). A value outside a given vocabulary also maps to 0.
  """
  # Encode the distinct raw strings only: logs repeat a handful of values millions of times.
  distinct, inverse = np.unique(np.asarray(raw).astype(str), return_inverse=True)
  normalised = [normalise_category(v) for v in distinct.tolist()]
  unknown = [is_unknown(v) for v in normalised]
  if vocabulary is None:
    vocabulary = sorted_vocabulary(v for v, u in zip(normalised, unknown) if not u)
  index = {v: i + 1 for i, v in enumerate(vocabulary)}
  distinct_ids = np.fromiter((UNKNOWN_ID if u else index.get(v, UNKNOWN_ID)
                              for v, u in zip(normalised, unknown)), np.int32, len(normalised))
  ids = distinct_ids[inverse.reshape(-1)] if len(distinct) else np.zeros(0, np.int32)
  return ids, list(vocabulary), int((ids == UNKNOWN_ID).sum())


def dense_ids(raw_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Maps arbitrary integer ids to ``0..K-1`` in increasing raw order.

  Returns:
    (dense int32 ``[n]``, the sorted distinct raw ids int64 ``[K]``).
  """
  distinct, dense = np.unique(np.asarray(raw_ids, np.int64), return_inverse=True)
  return dense.astype(np.int32), distinct


def lookup(keys: np.ndarray, table_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Position of each key in ``table_keys`` (any order); (positions, found mask)."""
  table_keys = np.asarray(table_keys)
  order = np.argsort(table_keys, kind="stable")
  sorted_keys = table_keys[order]
  position = np.searchsorted(sorted_keys, keys)
  position = np.minimum(position, len(sorted_keys) - 1)
  found = sorted_keys[position] == keys
  return order[position], found


def check_unique(table: Mapping[str, np.ndarray], key: str, path: pathlib.Path | str) -> None:
  """Raises when a side table (features of users, items, ads) repeats a key.

  A repeated id would make the join pick one of its rows arbitrarily.

  Raises:
    CsvFormatError: naming the file, the id, both lines and the number of repeats.
  """
  values = np.asarray(table[key])
  order = np.argsort(values, kind="stable")
  repeated = np.nonzero(values[order][1:] == values[order][:-1])[0]
  if repeated.size:
    first, second = order[repeated[0]], order[repeated[0] + 1]
    lines = table.get("_line")
    where = (f"lines {lines[first]} and {lines[second]}" if lines is not None
             else f"data rows {first} and {second} (0-based)")
    raise CsvFormatError(f"{path}: {where}: {key} {values[first]} appears more than once "
                         f"({repeated.size} repeated ids); each must have one row")


def check_files(directory: pathlib.Path | str, expected: Mapping[str, str], *, dataset: str,
                instructions: str) -> dict[str, list[pathlib.Path]]:
  """Resolves expected file patterns in ``directory`` or raises naming every one.

  Args:
    directory: the manual directory holding the official files.
    expected: glob pattern (e.g. ``log_standard_*_pure.csv``) -> what it is.
    dataset: name for the message.
    instructions: where a user obtains the files.

  Returns:
    pattern -> the matching paths, sorted by name.

  Raises:
    FileNotFoundError: listing every expected pattern, which are missing, and
      the instructions.
  """
  directory = pathlib.Path(directory)
  found = {pattern: sorted(directory.glob(pattern)) if directory.is_dir() else []
           for pattern in expected}
  missing = [pattern for pattern, paths in found.items() if not paths]
  if missing:
    listing = "\n".join(f"  {'MISSING ' if p in missing else 'found   '}{p}: {what}"
                        for p, what in expected.items())
    raise FileNotFoundError(
        f"{dataset}: {len(missing)} expected file(s) missing in {directory}.\n"
        f"Expected files:\n{listing}\n{instructions}")
  return found
