"""Evaluation of a model on a whole split: logits gathered over padded batches, then metrics.

Every row is scored exactly once (the last batch is padded and its padding
masked out), logits are gathered on the host and LogLoss, AUC and GAUC (grouped
by the dataset's user field) are computed over the complete split, so the
numbers do not depend on the batch size or the number of devices. In a
multi-process run each process scores its rows of every batch and the logits
are gathered from all processes, so every process computes the same metrics.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from jax.sharding import Mesh

from hgrank_jax import metrics as metrics_lib
from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.data.inmemory import MASK, eval_batches
from hgrank_jax.train.sharding import gather_to_host

# Validation metrics early stopping may watch, and whether larger is better.
METRIC_MODES = {"gauc": "max", "auc": "max", "logloss": "min"}


def predict_split(predict: Callable, params: Any, model_state: Any,
                  columns: Mapping[str, np.ndarray], batch_size: int, mesh: Mesh) -> np.ndarray:
  """Logits ``[n]`` float32 for every row of ``columns``, in row order."""
  outputs = []
  for batch in eval_batches(columns, batch_size, mesh=mesh):
    logits = gather_to_host(predict(params, model_state, batch)).astype(np.float32)
    outputs.append(logits[gather_to_host(batch[MASK])])
  return np.concatenate(outputs)


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           groups: np.ndarray | None) -> dict[str, float]:
  """LogLoss, AUC, GAUC (with groups), ECE and row counts of one split, as Python numbers."""
  out = metrics_lib.ctr_metrics(logits, labels, groups)
  return {k: (int(v) if k.startswith("num_") else float(v)) for k, v in out.items()}


def evaluate_split(predict: Callable, params: Any, model_state: Any,
                   columns: Mapping[str, np.ndarray], spec: FeatureSpec, batch_size: int,
                   mesh: Mesh, *, where: np.ndarray | None = None) -> dict[str, float]:
  """Scores a split and returns its metrics; ``where`` restricts them to a row subset."""
  logits = predict_split(predict, params, model_state, columns, batch_size, mesh)
  labels = np.asarray(columns[spec.label])
  groups = np.asarray(columns[spec.user_field]) if spec.user_field else None
  if where is not None:
    logits, labels = logits[where], labels[where]
    groups = groups[where] if groups is not None else None
  return classification_metrics(logits, labels, groups)
