"""Writes official-format KuaiRand-Pure logs spanning several days over the real feature sample.

Each active user sees 15-45 standard exposures a day (some videos twice) and a
few random exposures; clicks follow a hidden per-user taste for the video's
first tag, so a reranker has something to learn. Shared by the list-builder
tests and the reranking comparison test.
"""

import csv
import math
import pathlib
import random
import shutil

from hgrank_jax.data.official import kuairand

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "kuairand_pure"
DATES = tuple(20220408 + d for d in range(8))
BASE_TIME = 1649390000000


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def write_daily_logs(directory, *, num_users=12, dates=DATES, seed=0):
  """Copies the feature sample and writes standard and random logs; returns the rows written."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for name in ("user_features_pure.csv", "video_features_basic_pure.csv"):
    shutil.copy(FIXTURE / name, directory / name)
  users = [int(r["user_id"]) for r in _rows(FIXTURE / "user_features_pure.csv")][:num_users]
  videos = {int(r["video_id"]): r["tag"].split(",")[0] for r in
            _rows(FIXTURE / "video_features_basic_pure.csv")}
  rng = random.Random(seed)
  taste = {(u, t): rng.gauss(0.0, 1.5) for u in users for t in sorted(set(videos.values()))}
  appeal = {v: rng.gauss(0.0, 0.7) for v in videos}
  standard, randomised, serial = [], [], 0
  for date in dates:
    for user in users:
      if rng.random() < 0.15:
        continue  # an inactive day
      shown = rng.sample(sorted(videos), rng.randint(15, 40))
      shown += rng.sample(shown, rng.randint(0, 5))  # repeated exposures on one day
      for video in shown + [None] * rng.randint(0, 2):
        is_rand = int(video is None)
        video = rng.choice(sorted(videos)) if video is None else video
        logit = taste[(user, videos[video])] + appeal[video] - 1.0
        click = int(rng.random() < 1.0 / (1.0 + math.exp(-logit)))
        row = {"user_id": user, "video_id": video, "date": date, "hourmin": rng.randint(0, 23) * 100,
               "time_ms": BASE_TIME + 997 * serial, "is_click": click,
               "is_like": int(click and rng.random() < 0.2), "is_follow": 0, "is_comment": 0,
               "is_forward": 0, "is_hate": 0, "long_view": int(click and rng.random() < 0.5),
               "play_time_ms": 1000, "duration_ms": 9000, "profile_stay_time": 0,
               "comment_stay_time": 0, "is_profile_enter": 0, "is_rand": is_rand, "tab": 1}
        (randomised if is_rand else standard).append(row)
        serial += 1
  files = {"log_standard_4_08_to_4_21_pure.csv": standard,
           "log_random_4_22_to_5_08_pure.csv": randomised}
  for name, rows in files.items():
    with open(directory / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(kuairand.LOG_HEADER)
      writer.writerows([row[c] for c in kuairand.LOG_HEADER] for row in rows)
  return standard + randomised
