"""Paper tables from cached runs: hyperparameters chosen on validation, seeds, paired intervals.

A table is a list of rows; each row is a set of config overrides (e.g. the
objective) and a small declared grid of hyperparameters. For each row, every grid
point is trained with the first seed and the point with the best validation
metric is kept (the test split is never looked at for any choice); that point is
then trained with every seed. Rows are summarised by the mean and standard
deviation over seeds of the test metrics, and compared with a reference row by
the paired difference over seeds with a two-sided 95% t interval. With fewer than
``MIN_SEEDS_FOR_INTERVAL`` (3) seeds no interval is given: a t interval from two
differences has one degree of freedom, so it is either very wide (t = 12.7) or,
when the two differences happen to agree, shrinks to almost nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from hgrank_jax.experiments import runs as runs_lib
from hgrank_jax.train import seeds as seeds_lib
from hgrank_jax.train.checkpoint import flatten_dict as flatten

METRICS = ("logloss", "auc", "gauc")
HIGHER_IS_BETTER = {"logloss": False, "auc": True, "gauc": True}
MIN_SEEDS_FOR_INTERVAL = 3


@dataclasses.dataclass(frozen=True)
class Row:
  """One table row: fixed overrides plus a grid chosen on validation.

  Attributes:
    key: short id used in run names (e.g. "groupce").
    name: display name (e.g. "GroupCE").
    overrides: nested dict of config values fixed for the row.
    grid: nested dict of lists; every combination is tried with the first seed.
  """

  key: str
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  grid: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def grid_points(self) -> list[dict[str, Any]]:
    flat = flatten(self.grid)
    keys = sorted(flat)
    return [dict(zip(keys, values)) for values in itertools.product(*(flat[k] for k in keys))]


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
  """Mean of paired differences and its two-sided t interval (NaN bounds with one pair)."""
  d = np.asarray(differences, np.float64)
  mean = float(d.mean())
  if len(d) < 2:
    return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": int(len(d))}
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
  return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(len(d))}


def _describe(point: Mapping[str, Any]) -> str:
  """A grid point for the log: ``{"learning_rate": 0.003, "hgr.num_levels": 2}`` ->
  "hgr.num_levels=2, learning_rate=0.003"."""
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in sorted(point.items())) or "defaults"


def runs_in_row(row: Row, num_seeds: int) -> int:
  """How many runs :func:`run_row` starts: the grid with the first seed (if it has
  more than one point), then every seed."""
  points = len(row.grid_points())
  return (points if points > 1 else 0) + num_seeds


def _train_new_seeds_together(base, overrides, seeds, runs_dir, row, dataset, log):
  """``config.vmap_seeds``: the seeds with no workdir yet train as one vmapped program.

  Each seed's workdir is left as a finished run (``train.seeds.train_seeds``), so
  the per-seed loop that follows reads their results like any cached run. Seeds
  already trained, or interrupted (those resume from their checkpoint), are left
  to that loop.
  """
  configs = [runs_lib.with_overrides(base, {**overrides, "seed": seed}) for seed in seeds]
  workdirs = [runs_lib.workdir_for(config, runs_dir, row.key) for config in configs]
  new = [i for i, workdir in enumerate(workdirs) if not workdir.exists()]
  if len(new) < 2:
    return
  log(f"[{row.name}] training seeds {', '.join(str(seeds[i]) for i in new)} side by side "
      "in one vmapped program (config.vmap_seeds)")
  seeds_lib.train_seeds(configs[new[0]], [seeds[i] for i in new], dataset=dataset,
                        workdirs=[workdirs[i] for i in new])


def run_row(base, row: Row, seeds: Sequence[int], runs_dir, *, dataset=None,
            selection_metric: str = "gauc", log: Callable[[str], None] = print,
            job: runs_lib.Job | None = None) -> dict[str, Any]:
  """Selects the row's grid point on validation with ``seeds[0]``, then trains every seed.

  With a ``job``, each run's console lines carry its number in the job and a title
  (e.g. ``[run 3/12] LogLoss + ListCE, seed 1``) in place of this function's own
  line per seed.
  """
  points = row.grid_points()
  fixed = flatten(row.overrides)
  selection = []
  chosen = points[0]
  if len(points) > 1:  # with one point there is nothing to choose: its run is the first seed's
    for i, point in enumerate(points):
      config = runs_lib.with_overrides(base, {**fixed, **point, "seed": seeds[0]})
      title = (f"{row.name}, tuning on validation {selection_metric} with seed {seeds[0]}: "
               f"setting {i + 1} of {len(points)}, {_describe(point)}")
      if job is None:
        log(f"[{row.name}] {title.removeprefix(row.name + ', ')}")
      result = runs_lib.cached_run(config, runs_dir, row.key, dataset=dataset,
                                   context=job.context(title) if job else None)
      selection.append({"point": point, "valid": result["valid"][selection_metric],
                        "workdir": result["workdir"]})
    sign = 1.0 if HIGHER_IS_BETTER.get(selection_metric, True) else -1.0
    scores = [sign * s["valid"] if np.isfinite(s["valid"]) else -np.inf for s in selection]
    best = int(np.argmax(scores))
    chosen = points[best]
    log(f"[{row.name}] chose {_describe(chosen)} "
        f"(validation {selection_metric} {selection[best]['valid']:.4f})")
  if base.get("vmap_seeds", False):
    _train_new_seeds_together(base, {**fixed, **chosen}, seeds, runs_dir, row, dataset, log)
  per_seed = []
  for j, seed in enumerate(seeds):
    config = runs_lib.with_overrides(base, {**fixed, **chosen, "seed": seed})
    title = (f"{row.name}, seed {seed} ({j + 1} of {len(seeds)})"
             + (f", {_describe(chosen)}" if chosen else ""))
    if job is None:
      log(f"[{row.name}] training {title.removeprefix(row.name + ', ')}")
    result = runs_lib.cached_run(config, runs_dir, row.key, dataset=dataset,
                                 context=job.context(title) if job else None)
    per_seed.append({"seed": seed, "valid": result["valid"], "test": result["test"],
                     "best_step": result["best_step"], "workdir": result["workdir"]})
  if not selection:
    selection = [{"point": chosen, "valid": per_seed[0]["valid"][selection_metric],
                  "workdir": per_seed[0]["workdir"]}]
  return {"key": row.key, "name": row.name, "chosen": chosen, "selection": selection,
          "runs": per_seed}


def summarise(rows: Sequence[Mapping[str, Any]], reference_key: str,
              metrics: Sequence[str] = METRICS, split: str = "test",
              value_fn: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None,
              min_seeds: int = MIN_SEEDS_FOR_INTERVAL) -> list[dict[str, Any]]:
  """Mean/std per metric and the paired difference to ``reference_key`` per row.

  ``value_fn(run) -> {metric: value}`` overrides where values come from (e.g. a
  subset of test rows for Table 2); by default ``run[split]``. Each entry holds
  ``<metric>_{mean,std}`` and ``<metric>_diff_{mean,low,high,n}``: the paired
  difference over the seeds both rows share and its 95% t interval, whose bounds
  are NaN when fewer than ``min_seeds`` seeds are paired (see the module text).
  """
  value_fn = value_fn or (lambda run: run[split])
  values = {r["key"]: {run["seed"]: value_fn(run) for run in r["runs"]} for r in rows}
  if reference_key not in values:
    raise KeyError(f"reference row {reference_key!r} is not among {sorted(values)}")
  reference = values[reference_key]
  table = []
  for r in rows:
    entry = {"key": r["key"], "name": r["name"], "chosen": r.get("chosen", {}),
             "seeds": len(values[r["key"]])}
    for metric in metrics:
      v = np.array([values[r["key"]][s][metric] for s in sorted(values[r["key"]])], np.float64)
      entry[f"{metric}_mean"] = float(v.mean())
      entry[f"{metric}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
      common = sorted(set(values[r["key"]]) & set(reference))
      diffs = [values[r["key"]][s][metric] - reference[s][metric] for s in common]
      interval = paired_interval(diffs) if diffs else {"mean": float("nan"), "low": float("nan"),
                                                       "high": float("nan"), "n": 0}
      if interval["n"] < min_seeds:
        interval["low"] = interval["high"] = float("nan")
      for k, val in interval.items():
        entry[f"{metric}_diff_{k}"] = val
    table.append(entry)
  return table
