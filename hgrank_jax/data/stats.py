"""Summary statistics of a dataset: what ``launch.data_stats`` prints.

Per split: rows, users, items, positive rate, users with at least one positive;
and the paper's Table 2 user groups by number of training rows (cold: 1-20,
warm: 21-50; users with more than 50 are outside both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hgrank_jax.data.dataset import Dataset

COLD_MAX_TRAIN_ROWS = 20
WARM_MAX_TRAIN_ROWS = 50


def split_stats(dataset: Dataset) -> dict[str, dict[str, Any]]:
  """Per split: rows, users, items, positives, positive_rate, users_with_positive."""
  spec = dataset.spec
  out = {}
  for split, columns in dataset.splits.items():
    labels = np.asarray(columns[spec.label]) > 0
    row = {"rows": int(len(labels)), "positives": int(labels.sum()),
           "positive_rate": float(labels.mean()) if len(labels) else float("nan")}
    if spec.user_field:
      users = np.asarray(columns[spec.user_field])
      row["users"] = int(len(np.unique(users)))
      row["users_with_positive"] = int(len(np.unique(users[labels])))
    if spec.item_field:
      row["items"] = int(len(np.unique(columns[spec.item_field])))
    out[split] = row
  return out


def user_activity_groups(dataset: Dataset) -> dict[str, Any]:
  """Users grouped by training rows as Table 2, with their test rows.

  Returns:
    {"cold": {...}, "warm": {...}, "other": {...}} each with users,
    test_users (of those, how many appear in test) and test_rows; plus
    users_at_most_20_train_rows_share over all users seen in training.
  """
  spec = dataset.spec
  if not spec.user_field:
    raise ValueError(f"{dataset.name} has no user field; cold/warm groups need one")
  train_users = np.asarray(dataset.split("train")[spec.user_field])
  test_users = np.asarray(dataset.split("test")[spec.user_field])
  ids, train_rows = np.unique(train_users, return_counts=True)
  groups = {
      "cold": (train_rows >= 1) & (train_rows <= COLD_MAX_TRAIN_ROWS),
      "warm": (train_rows > COLD_MAX_TRAIN_ROWS) & (train_rows <= WARM_MAX_TRAIN_ROWS),
      "other": train_rows > WARM_MAX_TRAIN_ROWS,
  }
  out: dict[str, Any] = {}
  for name, selected in groups.items():
    in_group = np.isin(test_users, ids[selected])
    out[name] = {"users": int(selected.sum()),
                 "test_users": int(len(np.unique(test_users[in_group]))),
                 "test_rows": int(in_group.sum())}
  out["test_rows_of_users_without_train_rows"] = int((~np.isin(test_users, ids)).sum())
  out["users_at_most_20_train_rows_share"] = float(groups["cold"].mean()) if len(ids) else float("nan")
  return out


def format_table(rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
  """A markdown table of ``rows`` (name -> values) with the given columns."""
  def fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)
  lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for name, values in rows.items():
    lines.append(f"| {name} | " + " | ".join(fmt(values.get(c, "")) for c in columns) + " |")
  return "\n".join(lines)
