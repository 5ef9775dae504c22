"""Training runs as experiments: one run in a given workdir, and cached runs for tables.

``run(config, workdir)`` is the experiment behind ``launch.train``: one
``train_and_evaluate`` in ``workdir``. A table is many such runs; with
:func:`cached_run` each run's workdir is ``<runs_dir>/<row>-<hash>`` where the
hash covers the whole config, so rerunning a reproduction reuses finished runs
(the trainer returns their saved results) and resumes interrupted ones from
their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
from typing import Any, Mapping

import ml_collections

from hgrank_jax.train.checkpoint import identity_config
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.writers import RunContext


def config_hash(config: ml_collections.ConfigDict) -> str:
  """A short stable hash of every value in ``config``.

  Keys at their neutral default (``train.checkpoint.NEUTRAL_DEFAULTS``: added
  after runs were cached, at the value that reproduces the old behaviour) are
  left out, so adding such a key keeps every cached run's hash.
  """
  text = json.dumps(identity_config(config.to_dict()), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass
class Job:
  """Numbers the training runs of one reproduction for their console lines.

  ``Job(total=12).context("LogLoss, seed 0")`` -> ``RunContext(label="run 1/12",
  title="LogLoss, seed 0", job_started_at=<when the job started>)``; the next call
  is run 2/12. Runs reused from the cache count too: they print their metrics.
  """

  total: int
  started_at: float = dataclasses.field(default_factory=time.time)
  started: int = 0

  def context(self, title: str) -> RunContext:
    self.started += 1
    return RunContext(label=f"run {self.started}/{self.total}", title=title,
                      job_started_at=self.started_at)


def with_overrides(config: ml_collections.ConfigDict,
                   overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with dotted-key overrides (``{"hgr.num_levels": 2}``)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise KeyError(f"override {key!r}: no such config key")
    node[leaf] = value
  return config


def workdir_for(config: ml_collections.ConfigDict, runs_dir: pathlib.Path | str,
                name: str) -> pathlib.Path:
  """The cached run's workdir: ``<runs_dir>/<name>-<config_hash(config)>``."""
  return pathlib.Path(runs_dir) / f"{name}-{config_hash(config)}"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path | str, *, dataset=None,
        context: RunContext | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir``, resuming from its last checkpoint when rerun.

  ``train_and_evaluate`` with the launcher's signature: checkpoints,
  ``config.json``, ``metrics.jsonl``, ``results.json`` and ``predictions.npz`` go
  to ``workdir``; a finished workdir returns its saved results without training.

  Returns:
    ``{"valid": {...}, "test": {...}, "best_step", "steps", "stopped_early"}``, or
    ``{"interrupted_at": step}`` when SIGTERM or SIGINT stopped the run after
    saving a checkpoint of that step.
  """
  return dict(train_and_evaluate(config, workdir, dataset=dataset, context=context))


def cached_run(config: ml_collections.ConfigDict, runs_dir: pathlib.Path | str, name: str,
               *, dataset=None, context: RunContext | None = None) -> dict[str, Any]:
  """Trains (or reuses) one run in :func:`workdir_for`; returns its results plus ``workdir``.

  ``context`` labels the run's console lines with its place in the job (e.g.
  ``[run 3/12] LogLoss + ListCE, seed 1``); see :class:`Job`.
  """
  workdir = workdir_for(config, runs_dir, name)
  results = run(config, workdir, dataset=dataset, context=context)
  if "interrupted_at" in results:  # SIGTERM/SIGINT: the run saved a checkpoint and stopped
    print(f"Interrupted in {workdir} at step {results['interrupted_at']}; rerun the same "
          "command to resume (finished runs are reused).")
    raise SystemExit(0)
  results["workdir"] = str(workdir)
  return results
