"""Official KuaiRand logs (Pure, 1K, 27K) joined with their user and video features.

KuaiRand (Gao et al., CIKM 2022, https://kuairand.com, CC BY-SA 4.0) logs every
exposure of a video to a user in the Kuaishou app, from the standard
recommender (``log_standard_*.csv``) and from random exposures
(``log_random_*.csv``, ``is_rand`` = 1). :func:`read` joins each exposure with
``user_features_*.csv`` and ``video_features_basic_*.csv`` into columns:

* ids: ``user_id`` (user tower), ``video_id`` (item tower), ``category`` (item
  tower: the first id of the video's ``tag`` list; 0 when it has none).
* user side features (user tower): activity level, flags and the quoted range
  buckets such as ``"[100,1k)"`` as categories; follow/fan/friend counts and
  registration days as ``log1p`` numbers.
* video side features (item tower): video type, upload type, music type as
  categories; ``log1p`` of the duration in seconds.
* context: ``tab`` and ``hour`` (from ``hourmin``).
* labels ``is_click`` (default), ``long_view``, ``is_like`` as separate fields.
* extra columns outside the spec: ``is_rand`` (evaluate the random-exposure
  slice alone), ``time_ms`` and ``date``.

Every categorical side feature maps empty values, ``UNKNOWN`` and negative
sentinels (``is_live_streamer`` is -124 for most users) to an explicit unknown
bucket, id 0, and ``info["unknown_values"]`` counts them per field.
"""

from __future__ import annotations

import pathlib

import numpy as np

from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature

CONFIGS = ("pure", "1k", "27k")
_SUFFIX = {"pure": "_pure", "1k": "_1k", "27k": "_27k*"}
INSTRUCTIONS = (
    "Obtain KuaiRand from https://kuairand.com (download links to Zenodo / Google Drive): "
    "KuaiRand-Pure.tar.gz, KuaiRand-1K.tar.gz or KuaiRand-27K.tar.gz, and extract the CSV "
    "files of its data/ folder into the manual directory (licence CC BY-SA 4.0).")
LOG_HEADER = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
              "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
              "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
              "is_rand", "tab")
_LOG_COLUMNS = {name: csv_core.INT for name in
                ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "long_view",
                 "is_like", "is_rand", "tab")}
LABELS = ("is_click", "long_view", "is_like")
USER_CATEGORICAL = (("user_active_degree", "is_lowactive_period", "is_live_streamer",
                     "is_video_author", "follow_user_num_range", "fans_user_num_range",
                     "friend_user_num_range", "register_days_range")
                    + tuple(f"onehot_feat{i}" for i in range(18)))
USER_COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
VIDEO_CATEGORICAL = ("video_type", "upload_type", "music_type")
NUM_HOURS = 24


def expected_files(config: str) -> dict[str, str]:
  """Glob pattern -> description of every file the ``config`` needs."""
  if config not in CONFIGS:
    raise ValueError(f"kuairand has no config {config!r}; configs are {list(CONFIGS)}")
  s = _SUFFIX[config]
  return {f"log_standard_*{s}.csv": "standard-recommender exposure logs (one or more files)",
          f"log_random_*{s}.csv": "random-exposure logs (is_rand = 1)",
          f"user_features{s}.csv": "user side features",
          f"video_features_basic{s}.csv": "video side features (tag = comma list of category ids)"}


def _read_parts(paths: list[pathlib.Path], kinds: dict[str, str]) -> dict[str, np.ndarray]:
  """Reads one table that may ship in several part files (27K), concatenated in name order."""
  parts = [csv_core.read_csv(path, kinds) for path in paths]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def read_user_features(paths: list[pathlib.Path]) -> tuple[dict[str, np.ndarray], dict, dict]:
  """Encodes ``user_features_*.csv`` (one file or its parts).

  Returns:
    (table, vocab_sizes, unknown_counts): table has ``user_id`` int64 ``[U]``,
    every USER_CATEGORICAL field as int32 ids ``[U]`` (0 = unknown) and every
    USER_COUNTS field as float32 ``log1p`` values ``[U]``.
  """
  kinds = {"user_id": csv_core.INT, **{c: csv_core.STR for c in USER_CATEGORICAL},
           **{c: csv_core.FLOAT for c in USER_COUNTS}}
  raw = _read_parts(paths, kinds)
  table, vocab_sizes, unknown = {"user_id": raw["user_id"]}, {}, {}
  for name in USER_CATEGORICAL:
    table[name], vocabulary, unknown[name] = csv_core.encode_categories(raw[name])
    vocab_sizes[name] = len(vocabulary) + 1
  for name in USER_COUNTS:
    values = raw[name]
    unknown[name] = int(np.sum(~np.isfinite(values) | (values < 0)))
    table[name] = np.log1p(np.where(np.isfinite(values) & (values >= 0), values, 0.0)).astype(
        np.float32)
  return table, vocab_sizes, unknown


def first_tags(tags: np.ndarray) -> np.ndarray:
  """The first id of each comma-separated ``tag`` list, as text ("" when none)."""
  return np.asarray([t.split(",")[0].strip() for t in tags], dtype=object)


def read_video_features(paths: list[pathlib.Path]) -> tuple[dict[str, np.ndarray], dict, dict]:
  """Encodes ``video_features_basic_*.csv`` (one file or its parts).

  Returns:
    (table, vocab_sizes, unknown_counts): table has ``video_id`` int64 ``[V]``,
    ``tag`` (the raw comma-separated tag lists, strings ``[V]``), ``category``
    int32 ``[V]`` (first tag, 0 = no tag), every VIDEO_CATEGORICAL field as
    int32 ids, and ``video_duration`` float32 ``log1p(seconds)``.
  """
  kinds = {"video_id": csv_core.INT, "tag": csv_core.STR, "video_duration": csv_core.FLOAT,
           **{c: csv_core.STR for c in VIDEO_CATEGORICAL}}
  raw = _read_parts(paths, kinds)
  table, vocab_sizes, unknown = {"video_id": raw["video_id"], "tag": raw["tag"]}, {}, {}
  table["category"], vocabulary, unknown["category"] = csv_core.encode_categories(
      first_tags(raw["tag"]))
  vocab_sizes["category"] = len(vocabulary) + 1
  for name in VIDEO_CATEGORICAL:
    table[name], vocabulary, unknown[name] = csv_core.encode_categories(raw[name])
    vocab_sizes[name] = len(vocabulary) + 1
  duration = raw["video_duration"]
  known = np.isfinite(duration) & (duration >= 0)
  unknown["video_duration"] = int((~known).sum())
  table["video_duration"] = np.log1p(np.where(known, duration, 0.0) / 1000.0).astype(np.float32)
  return table, vocab_sizes, unknown


def feature_spec(num_users: int, num_videos: int, vocab_sizes: dict[str, int],
                 num_tabs: int) -> FeatureSpec:
  """The KuaiRand spec; ``vocab_sizes`` holds every side feature's size (unknown included)."""
  categorical = [CategoricalFeature("user_id", num_users, tower="user"),
                 CategoricalFeature("video_id", num_videos, tower="item"),
                 CategoricalFeature("category", vocab_sizes["category"], tower="item")]
  categorical += [CategoricalFeature(n, vocab_sizes[n], tower="user") for n in USER_CATEGORICAL]
  categorical += [CategoricalFeature(n, vocab_sizes[n], tower="item") for n in VIDEO_CATEGORICAL]
  categorical += [CategoricalFeature("tab", num_tabs, tower="context"),
                  CategoricalFeature("hour", NUM_HOURS, tower="context")]
  numeric = [NumericFeature(n, tower="user") for n in USER_COUNTS]
  numeric.append(NumericFeature("video_duration", tower="item"))
  return FeatureSpec(categorical=tuple(categorical), numeric=tuple(numeric), labels=LABELS,
                     user_field="user_id", item_field="video_id", category_field="category")


def _read_logs(paths: list[pathlib.Path], skip_malformed: bool, report: csv_core.MalformedRows,
               rows_per_file: dict) -> dict[str, np.ndarray]:
  parts = []
  for path in paths:
    part = csv_core.read_csv(path, _LOG_COLUMNS, skip_malformed=skip_malformed, report=report)
    rows_per_file[path.name] = int(len(part["_line"]))
    part["_file"] = np.full(len(part["_line"]), len(parts), np.int32)
    parts.append(part)
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _drop_invalid(logs: dict, bad: np.ndarray, reason: str, names: list[str],
                  skip_malformed: bool, report: csv_core.MalformedRows) -> dict:
  """Raises on (or, when skipping, counts and removes) the rows flagged in ``bad``."""
  if not bad.any():
    return logs
  if not skip_malformed:
    i = int(np.argmax(bad))
    raise csv_core.CsvFormatError(f"{names[logs['_file'][i]]}: line {logs['_line'][i]}: {reason} "
                                  f"({int(bad.sum())} such rows)")
  for file_index, line in zip(logs["_file"][bad], logs["_line"][bad]):
    report.add(names[file_index], reason, int(line))
  return {k: v[~bad] for k, v in logs.items()}


def read(manual_dir: pathlib.Path | str, config: str = "pure", *, skip_malformed: bool = False
         ) -> tuple[FeatureSpec, dict[str, np.ndarray], dict]:
  """Reads and joins one KuaiRand release from ``manual_dir``; see :func:`read_with_videos`."""
  return read_with_videos(manual_dir, config, skip_malformed=skip_malformed)[:3]


def read_with_videos(manual_dir: pathlib.Path | str, config: str = "pure", *,
                     skip_malformed: bool = False
                     ) -> tuple[FeatureSpec, dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
  """Reads and joins one KuaiRand release from ``manual_dir``, keeping the video table.

  Args:
    manual_dir: directory with the official CSV files (see :func:`expected_files`).
    config: "pure", "1k" or "27k".
    skip_malformed: skip (and count in ``info["skipped_rows"]``) malformed log
      rows and rows whose user or video is absent from the feature files.

  Returns:
    (spec, columns, info, videos). Columns are ``[n]`` arrays in file order
    (standard logs, then random logs): int32 ids, float32 numbers and labels,
    int8 ``is_rand``, int64 ``time_ms``, int32 ``date``. ``videos`` is the
    table of :func:`read_video_features` (one row per video, raw tags included).

  Raises:
    FileNotFoundError: naming every expected file and where to obtain it.
    csv_core.CsvFormatError: naming the file, line and problem.
  """
  files = csv_core.check_files(manual_dir, expected_files(config), dataset=f"kuairand:{config}",
                               instructions=INSTRUCTIONS)
  s = _SUFFIX[config]
  log_paths = files[f"log_standard_*{s}.csv"] + files[f"log_random_*{s}.csv"]
  users, user_vocab, user_unknown = read_user_features(files[f"user_features{s}.csv"])
  videos, video_vocab, video_unknown = read_video_features(files[f"video_features_basic{s}.csv"])
  for table, key, pattern in ((users, "user_id", f"user_features{s}.csv"),
                              (videos, "video_id", f"video_features_basic{s}.csv")):
    # The tables hold no line numbers (27K ships several parts): name the rows.
    csv_core.check_unique(table, key, f"kuairand:{config} {[p.name for p in files[pattern]]}")
  report, rows_per_file = csv_core.MalformedRows(), {}
  logs = _read_logs(log_paths, skip_malformed, report, rows_per_file)
  names = [p.name for p in log_paths]

  user_row, user_found = csv_core.lookup(logs["user_id"], users["user_id"])
  logs = _drop_invalid(logs, ~user_found, "user_id not in the user features file", names,
                       skip_malformed, report)
  video_row, video_found = csv_core.lookup(logs["video_id"], videos["video_id"])
  logs = _drop_invalid(logs, ~video_found, "video_id not in the video features file", names,
                       skip_malformed, report)
  hour = logs["hourmin"] // 100
  bad_value = ((hour < 0) | (hour >= NUM_HOURS) | (logs["tab"] < 0)
               | np.isin(logs["is_rand"], (0, 1), invert=True))
  for label in LABELS:
    bad_value |= np.isin(logs[label], (0, 1), invert=True)
  logs = _drop_invalid(logs, bad_value, "hourmin, tab, is_rand or a label out of range", names,
                       skip_malformed, report)
  if not len(logs["_line"]):
    raise csv_core.CsvFormatError(f"kuairand:{config}: no valid log rows in {names}")
  user_row, _ = csv_core.lookup(logs["user_id"], users["user_id"])
  video_row, _ = csv_core.lookup(logs["video_id"], videos["video_id"])

  num_tabs = int(logs["tab"].max()) + 1
  columns = {"user_id": logs["user_id"].astype(np.int32),
             "video_id": logs["video_id"].astype(np.int32),
             "category": videos["category"][video_row]}
  columns.update({n: users[n][user_row] for n in USER_CATEGORICAL + USER_COUNTS})
  columns.update({n: videos[n][video_row] for n in VIDEO_CATEGORICAL + ("video_duration",)})
  columns["tab"] = logs["tab"].astype(np.int32)
  columns["hour"] = (logs["hourmin"] // 100).astype(np.int32)
  columns.update({label: logs[label].astype(np.float32) for label in LABELS})
  columns["is_rand"] = logs["is_rand"].astype(np.int8)
  columns["time_ms"] = logs["time_ms"]
  columns["date"] = logs["date"].astype(np.int32)

  spec = feature_spec(int(users["user_id"].max()) + 1, int(videos["video_id"].max()) + 1,
                      {**user_vocab, **video_vocab}, num_tabs)
  info = {"source": "KuaiRand (Gao et al., CIKM 2022), https://kuairand.com, CC BY-SA 4.0",
          "config": config, "manual_dir": str(manual_dir), "log_rows_per_file": rows_per_file,
          "rows": int(len(columns["user_id"])),
          "random_exposure_rows": int(columns["is_rand"].sum()),
          "unknown_values": {"user_features": user_unknown, "video_features": video_unknown},
          "videos_without_tag": int(video_unknown["category"]),
          "skipped_rows": report.to_info(), "extra_columns": ["is_rand", "time_ms", "date"]}
  return spec, columns, info, videos
