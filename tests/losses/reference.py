"""Direct numpy references for the loss tests: explicit per-group loops."""

import numpy as np

EPS = 1e-8


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_list_ce_groups(logits, labels, group_keys, valid, transform="sigmoid"):
  """Eq. 8 literally: mean over groups with a valid row of -sum ytilde log p."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels, np.float64)
  groups = {}
  for i, key in enumerate(group_keys):
    if valid[i]:
      groups.setdefault(key, []).append(i)
  total = 0.0
  for rows in groups.values():
    rows = np.array(rows)
    if transform == "sigmoid":
      scores = np_sigmoid(logits[rows])
    else:
      scores = np.exp(logits[rows] - logits[rows].max())
    probs = scores / scores.sum()
    targets = labels[rows] / (labels[rows].sum() + EPS)
    total += -np.sum(targets * np.log(probs))
  return total / max(len(groups), 1)


def np_logloss(logits, labels, valid):
  p = np_sigmoid(logits)
  y = np.asarray(labels, np.float64)
  per_row = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  return per_row[valid].mean() if valid.any() else 0.0
