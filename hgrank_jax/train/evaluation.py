"""Evaluation of a model on a whole split: logits gathered over padded batches, then metrics.

Every row is scored exactly once (the last batch is padded and its padding
masked out), logits are gathered on the host and LogLoss, AUC and GAUC (grouped
by the dataset's user field) are computed over the complete split, so the
numbers do not depend on the batch size or the number of devices. In a
multi-process run each process scores its rows of every batch and the logits
are gathered from all processes, so every process computes the same metrics.

On an accelerator, :class:`DeviceSplit` keeps a split on the devices and scores
it and computes the same metrics in one jitted call (sort-based AUC and GAUC,
:func:`~hgrank_jax.metrics.classification.device_ctr_metrics`); only the
metrics, a few scalars, come back to the host, and the logits only when they
are saved.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from hgrank_jax import metrics as metrics_lib
from hgrank_jax.data import chunks
from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.data.inmemory import MASK, eval_batches
from hgrank_jax.metrics.classification import device_ctr_metrics
from hgrank_jax.parallel.sharding import batch_sharding, gather_to_host, replicated_sharding

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


def _nanmean(values: np.ndarray, axis=None) -> np.ndarray:
  """Mean over the finite entries; NaN where there is none (and no warning)."""
  finite = np.isfinite(values)
  count = finite.sum(axis=axis)
  total = np.where(finite, values, 0.0).sum(axis=axis)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def diagnose_split(diagnostics: Callable, params: Any, model_state: Any,
                   columns: Mapping[str, np.ndarray], batch_size: int,
                   mesh: Mesh) -> dict[str, float]:
  """Means over a split's batches of an objective's per-batch diagnostics.

  ``diagnostics(params, model_state, batch)`` returns a dict of float scalars
  (e.g. the GroupCE harder-negatives report, which ``predict.diagnostics``
  carries); a batch where a value is NaN (no such row in it) is left out of
  that value's mean.
  """
  records = [jax.device_get(diagnostics(params, model_state, batch))
             for batch in eval_batches(columns, batch_size, mesh=mesh)]
  return {k: float(_nanmean(np.array([r[k] for r in records], np.float64))) for k in records[0]}


def evaluate_split(predict: Callable, params: Any, model_state: Any,
                   columns: Mapping[str, np.ndarray], spec: FeatureSpec, batch_size: int,
                   mesh: Mesh, *, where: np.ndarray | None = None) -> dict[str, float]:
  """Scores a split and returns its metrics; ``where`` restricts them to a row subset.

  When ``predict`` carries ``diagnostics`` (see :func:`diagnose_split`) and no
  ``where`` is given, their means over the split's batches are added.
  """
  logits = predict_split(predict, params, model_state, columns, batch_size, mesh)
  labels = np.asarray(columns[spec.label])
  groups = np.asarray(columns[spec.user_field]) if spec.user_field else None
  if where is not None:
    logits, labels = logits[where], labels[where]
    groups = groups[where] if groups is not None else None
  out = classification_metrics(logits, labels, groups)
  diagnostics = getattr(predict, "diagnostics", None)
  if diagnostics is not None and where is None:
    out.update(diagnose_split(diagnostics, params, model_state, columns, batch_size, mesh))
  return out


class DeviceSplit:
  """A split resident on the devices, scored and measured in one jitted call.

  The rows are padded to whole batches of ``batch_size`` and stored stacked
  ``[num_batches, batch_size, ...]`` with each batch split over the mesh's
  ``data`` axis; :meth:`metrics` maps ``predict`` over the batches
  (``lax.map``) and computes LogLoss, AUC, GAUC (grouped by the spec's user
  field), ECE and the counts on the padding-masked logits, as
  :func:`classification_metrics` does on the host (AUC and GAUC within ~1e-6 in
  float32). Memory: the split's columns plus one float32 logit per row.

  Args:
    predict: ``(params, model_state, batch) -> logits [B]`` (the objective's).
    columns: the split, column name -> ``[n, ...]`` numpy.
    spec: its feature spec (label and user field).
    batch_size: rows per scored batch over all devices (divisible by them).
    mesh: the data mesh.

  >>> import jax.numpy as jnp
  >>> from hgrank_jax.data import CategoricalFeature, FeatureSpec
  >>> from hgrank_jax.parallel.sharding import data_mesh
  >>> spec = FeatureSpec(categorical=(CategoricalFeature("u", 3, "user"),), labels=("y",),
  ...                    user_field="u")
  >>> split = DeviceSplit(lambda p, s, b: p * b["x"], {"x": np.array([1., -2., 3.]),
  ...                     "y": np.array([1., 0., 1.]), "u": np.array([0, 0, 1])}, spec, 2,
  ...                     data_mesh(jax.devices()[:1]))
  >>> out = split.metrics(jnp.float32(1.0), {})
  >>> out["auc"], out["num_rows"], out["num_gauc_groups"]
  (1.0, 3, 1)
  >>> split.predictions(jnp.float32(2.0), {}).tolist()
  [2.0, -4.0, 6.0]
  """

  def __init__(self, predict: Callable, columns: Mapping[str, np.ndarray], spec: FeatureSpec,
               batch_size: int, mesh: Mesh):
    self.num_rows = len(np.asarray(columns[spec.label]))
    self.label, self.user_field = spec.label, spec.user_field
    num_batches = -(-self.num_rows // batch_size)
    padded = num_batches * batch_size
    local = {}
    for name, values in columns.items():
      values = np.asarray(values)
      pad = np.repeat(values[:1], padded - self.num_rows, axis=0)
      local[name] = np.concatenate([values, pad]).reshape((num_batches, batch_size)
                                                           + values.shape[1:])
    local[MASK] = (np.arange(padded) < self.num_rows).reshape(num_batches, batch_size)
    sharding = chunks.stacked_sharding(mesh)
    self._batches = {}
    for name, values in local.items():
      if not jax.config.jax_enable_x64 and values.dtype.itemsize == 8:
        values = values.astype(np.int32 if values.dtype.kind in "iu" else np.float32)
      self._batches[name] = jax.make_array_from_callback(values.shape, sharding,
                                                         lambda idx, v=values: v[idx])
    one_batch = batch_sharding(mesh)

    def logits(params, model_state, batches):
      def score(batch):
        batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: one_batch, batch))
        return predict(params, model_state, batch).astype(np.float32)
      return jax.lax.map(score, batches).reshape(-1)

    diagnostics = getattr(predict, "diagnostics", None)

    def measure(params, model_state, batches):
      flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batches.items()}
      groups = flat[self.user_field] if self.user_field else None
      out = device_ctr_metrics(logits(params, model_state, batches), flat[self.label], groups,
                               where=flat[MASK])
      if diagnostics is not None:  # per-batch values, averaged on the host
        def diagnose(batch):
          batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: one_batch, batch))
          return diagnostics(params, model_state, batch)
        out["diagnostics"] = jax.lax.map(diagnose, batches)
      return out

    replicated = replicated_sharding(mesh)
    self._logits = jax.jit(logits, out_shardings=replicated)
    self._measure = jax.jit(measure, out_shardings=replicated)

  def metrics(self, params: Any, model_state: Any) -> dict[str, float]:
    """The split's metrics as Python numbers (keys of :func:`classification_metrics`,
    plus the batch means of ``predict.diagnostics`` when it carries them, as
    :func:`evaluate_split` adds them).

    Raises:
      ValueError: a logit is not finite (as :func:`classification_metrics` does).
    """
    out = jax.device_get(self._measure(params, model_state, self._batches))
    if not bool(out.pop("all_finite")):
      raise ValueError("logits must be finite")
    # In ctr_metrics' key order (a pytree comes back with its keys sorted).
    order = ("num_rows", "num_gauc_groups", "gauc", "logloss", "auc", "ece")
    metrics = {k: (int(out[k]) if k.startswith("num_") else float(out[k])) for k in order}
    for name, per_batch in out.get("diagnostics", {}).items():  # as diagnose_split averages
      metrics[name] = float(_nanmean(np.asarray(per_batch, np.float64)))
    return metrics

  def predictions(self, params: Any, model_state: Any) -> np.ndarray:
    """Logits ``[n]`` float32 of every row, in row order (copied to the host)."""
    return gather_to_host(self._logits(params, model_state, self._batches))[:self.num_rows]
