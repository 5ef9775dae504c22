"""The paper's experiments (section 6): Tables 1-3 and Figure 4 from one config.

``run(config, workdir)`` trains (or reuses) every run a table needs, chooses each
row's hyperparameters on validation, writes its tables and plots into ``workdir``
(``launch.reproduce`` defaults it to :func:`default_workdir`, ``runs/<name>``,
outside the tracked tree; see configs/table1.py) and ends by printing that folder:
``table1.{md,csv,json}`` (test LogLoss/AUC/GAUC, mean ± std over seeds, paired
difference to LogLoss with a 95% interval), ``table2.*`` (the same runs on cold
users, 1-20 training rows, and warm users, 21-50; users with more rows are
excluded), ``table3.*`` (GroupCE ablations) and ``figure4.{png,md,json}`` (test
GAUC over codebook size K and levels L), and ``convergence.png`` (validation GAUC
against training step for the LogLoss and GroupCE runs), and
``harder_negatives.{md,json}`` (per code level, the gradient GroupCE puts on
negatives and the logits of the negatives and positives it contrasts, as logged
during training). Table 2 reuses Table 1's runs through their saved test predictions. On the simulator, ``codes_vs_clusters.{md,json}``
reports the NMI between the GroupCE runs' code prefixes and the true user
clusters.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

import ml_collections
import numpy as np

from hgrank_jax.data import load_dataset, user_activity_groups
from hgrank_jax.data.stats import COLD_MAX_TRAIN_ROWS, WARM_MAX_TRAIN_ROWS
from hgrank_jax.data.sim.synthetic import build_world, config_for_view
from hgrank_jax.experiments import mechanisms, report
from hgrank_jax.experiments import runs as runs_lib
from hgrank_jax.experiments.tables import (METRICS, MIN_SEEDS_FOR_INTERVAL, Row, run_row,
                                           runs_in_row, summarise)
from hgrank_jax.train.evaluation import classification_metrics
from hgrank_jax.train.loop import PREDICTIONS_FILE
from hgrank_jax.train.writers import read_metrics


def _rows(config_rows) -> list[Row]:
  return [Row(key=r.key, name=r.name, overrides=r.overrides.to_dict(), grid=r.grid.to_dict())
          for r in config_rows]


def _user_groups(dataset):
  """Test-row masks of cold (1-20 training rows) and warm (21-50) users."""
  spec = dataset.spec
  train_users, counts = np.unique(dataset.split("train")[spec.user_field], return_counts=True)
  test_users = dataset.split("test")[spec.user_field]
  rows_of = dict(zip(train_users.tolist(), counts.tolist()))
  train_rows = np.array([rows_of.get(u, 0) for u in test_users.tolist()])
  return {"cold": (train_rows >= 1) & (train_rows <= COLD_MAX_TRAIN_ROWS),
          "warm": (train_rows > COLD_MAX_TRAIN_ROWS) & (train_rows <= WARM_MAX_TRAIN_ROWS)}


def _simulator_codes_report(base, dataset, rows, out_dir, log):
  """On the simulator: NMI of each GroupCE run's code prefixes against the true clusters."""
  view = base.dataset.partition(":")[2] or "small"
  world = build_world(config_for_view(view, seed=int(base.split_seed)))
  reports = []
  for row in rows:
    if row["key"] != "groupce":
      continue
    for run in row["runs"]:
      report = mechanisms.simulator_code_report(run["workdir"], dataset, world.user_cluster)
      reports.append({"seed": run["seed"], **report})
  lines = ["| seed | level | NMI(code prefix, true cluster) | codes used / K | prefixes used | "
           "true clusters |", "|---|---|---|---|---|---|"]
  for r in reports:
    for level in r["levels"]:
      lines.append(f"| {r['seed']} | {level['level']} | {level['nmi']:.3f} | {level['codes_used']}"
                   f"/{level['codebook_size']} | {level['prefixes_used']} | {level['true_clusters']} |")
  # Do the user embeddings that the codes quantise carry the clusters at all?
  probes = []
  for row in rows:
    if row["key"] not in ("logloss", "groupce"):
      continue
    for run in row["runs"]:
      users, embeddings = mechanisms.learned_user_embeddings(run["workdir"], dataset)
      for depth in range(world.user_cluster.shape[1]):
        probe = mechanisms.embedding_cluster_probe(embeddings, world.user_cluster[users, depth])
        probes.append({"row": row["name"], "seed": run["seed"], "depth": depth + 1, **probe})
  probe_lines = ["| row | seed | trie depth | true clusters | probe accuracy | chance |",
                 "|---|---|---|---|---|---|"]
  probe_lines += [f"| {p['row']} | {p['seed']} | {p['depth']} | {p['num_clusters']} | "
                  f"{p['accuracy']:.3f} | {p['chance']:.3f} |" for p in probes]
  oracle = mechanisms.simulator_oracle_metrics(view, seed=int(base.split_seed))
  oracle_lines = ["| true probability used as the score | test AUC | test GAUC |", "|---|---|---|"]
  oracle_lines += [f"| {name} | {m['auc']:.4f} | {m['gauc']:.4f} |" for name, m in oracle.items()]
  md = ("# GroupCE codes against the simulator's true user clusters\n\n" + "\n".join(lines)
        + "\n\n- level l compares the prefix of the first l codes with the true cluster at trie "
        "depth l (the deepest depth for longer codes); the codes count as finding the "
        "clusters at NMI >= 0.5 at level 1.\n\n## Do the user embeddings carry the clusters?\n\n"
        "Held-out nearest-centroid accuracy of the true cluster from the learned user "
        "embedding e_u (2 folds over users; chance = majority share). Near-chance accuracy "
        "means the embeddings hold no trace of the clusters for any quantiser to find.\n\n"
        + "\n".join(probe_lines) + "\n\n## The ceiling: the simulator's true probabilities\n\n"
        "Scored against the same logged test clicks as the table rows; `relevance` is "
        "what a position-debiased scorer estimates, `click_prob` adds the logged slot's "
        "position bias.\n\n" + "\n".join(oracle_lines) + "\n")
  (out_dir / "codes_vs_clusters.md").write_text(md)
  summary = {"codes": reports, "probes": probes, "oracle": oracle}
  (out_dir / "codes_vs_clusters.json").write_text(json.dumps(summary, indent=2))
  log(md)
  return summary


def _harder_negatives(rows, out_dir, dataset_name, log):
  """Per-level negative gradients and logits logged by the GroupCE row's runs."""
  workdirs = [run["workdir"] for row in rows if row["key"] == "groupce" for run in row["runs"]]
  summary = mechanisms.harder_negatives_report(workdirs)
  md = mechanisms.harder_negatives_markdown(
      summary, f"Harder negatives per level, GroupCE on {dataset_name}")
  (out_dir / "harder_negatives.md").write_text(md)
  (out_dir / "harder_negatives.json").write_text(json.dumps(summary, indent=2))
  log(md)
  return summary


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """Where ``launch.reproduce`` writes without ``--workdir``: ``runs/<config.name>``.

  ``runs/`` is ignored by git, so a reproduction leaves the checkout as it was.

  >>> default_workdir(ml_collections.ConfigDict({"name": "kuairand_sig_quick"}))
  'runs/kuairand_sig_quick'
  """
  return f"runs/{config.name}"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path | str, *,
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the tables listed in ``config.tables`` into ``workdir``; returns their summaries.

  Tables and plots go to ``workdir``, the training runs to ``config.runs_dir``
  (``""``: ``<workdir>/runs``), one folder per run named by its config hash:
  rerunning reuses finished runs and resumes an interrupted one from its last
  checkpoint.
  """
  base = config.train
  options = {"manual_dir": base.manual_dir} if base.get("manual_dir") else {}
  dataset = load_dataset(base.dataset, seed=int(base.split_seed), **options)
  out_dir = pathlib.Path(workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  runs_dir = pathlib.Path(config.runs_dir or out_dir / "runs")
  seeds = list(range(int(config.num_seeds)))
  interval_note = ("paired 95% t intervals over seeds" if len(seeds) >= MIN_SEEDS_FOR_INTERVAL
                   else f"no intervals: {len(seeds)} seeds give a t interval too unstable to "
                   f"read (rerun with --config.num_seeds={MIN_SEEDS_FOR_INTERVAL} or more)")
  tuned = any(r.grid for r in config.table1_rows)
  notes = [f"dataset {dataset.name}, {len(seeds)} seeds, "
           + (f"hyperparameters chosen on validation {config.selection_metric} with seed 0"
              if tuned else "default hyperparameters (no tuning)") + f"; {interval_note}.",
           f"command: python -m launch.reproduce --config {config.command_config}"]
  summaries: dict[str, Any] = {}
  total = sum(runs_in_row(row, len(seeds)) for name in ("table1", "table3")
              if name in config.tables for row in _rows(config[f"{name}_rows"]))
  if "figure4" in config.tables:
    total += (len(config.figure4.codebook_sizes) * len(config.figure4.levels)
              * len(seeds[:int(config.figure4.num_seeds)]))
  job = runs_lib.Job(total=total)

  if "table1" in config.tables:
    rows = [run_row(base, row, seeds, runs_dir, dataset=dataset,
                    selection_metric=config.selection_metric, log=log, job=job)
            for row in _rows(config.table1_rows)]
    reference = rows[0]
    table = summarise(rows, reference["key"])
    md = report.write_table(out_dir / "table1", table, METRICS, reference["name"],
                            title=f"Table 1 on {dataset.name}", notes=notes,
                            extra={"runs": rows})
    log(md)
    summaries["table1"] = table
    curves = {}
    for row in rows:
      if row["key"] in ("logloss", "groupce"):
        for run in row["runs"]:
          records = read_metrics(run["workdir"], "eval")
          curves[f"{row['name']} (seed {run['seed']})"] = [(r["step"], r["valid_gauc"])
                                                           for r in records]
    report.convergence_png(out_dir / "convergence.png", curves,
                           title=f"Validation GAUC during training, {dataset.name}")
    summaries["harder_negatives"] = _harder_negatives(rows, out_dir, dataset.name, log)

    groups = _user_groups(dataset)
    test = dataset.split("test")
    table2 = {}
    for group, mask in groups.items():
      def subset_metrics(run, mask=mask):
        logits = np.load(pathlib.Path(run["workdir"]) / PREDICTIONS_FILE)["test"]
        return classification_metrics(logits[mask], test[dataset.spec.label][mask],
                                      test[dataset.spec.user_field][mask])
      table2[group] = summarise(rows, reference["key"], value_fn=subset_metrics)
    activity = user_activity_groups(dataset)
    sizes = {g: {"test_rows": int(m.sum()), "users": activity[g]["test_users"]}
             for g, m in groups.items()}
    md2 = (f"# Table 2 on {dataset.name}: cold (1-{COLD_MAX_TRAIN_ROWS} training rows) and warm "
           f"({COLD_MAX_TRAIN_ROWS + 1}-{WARM_MAX_TRAIN_ROWS}) users; users with more are "
           "excluded\n\n"
           + "\n\n".join(
               f"## {g} users ({sizes[g]['users']} users, {sizes[g]['test_rows']} test rows)\n\n"
               + report.markdown_table(t, METRICS, reference["name"])
               for g, t in table2.items())
           + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (out_dir / "table2.md").write_text(md2)
    (out_dir / "table2.json").write_text(json.dumps({"groups": sizes, "tables": table2}, indent=2))
    log(md2)
    summaries["table2"] = table2
    if base.dataset.startswith("synthetic"):
      summaries["codes"] = _simulator_codes_report(base, dataset, rows, out_dir, log)

  if "table3" in config.tables:
    rows = [run_row(base, row, seeds, runs_dir, dataset=dataset,
                    selection_metric=config.selection_metric, log=log, job=job)
            for row in _rows(config.table3_rows)]
    table = summarise(rows, rows[0]["key"])
    md = report.write_table(out_dir / "table3", table, METRICS, rows[0]["name"],
                            title=f"Table 3 (GroupCE ablations) on {dataset.name}", notes=notes,
                            extra={"runs": rows})
    log(md)
    summaries["table3"] = table

  if "figure4" in config.tables:
    sizes, levels = list(config.figure4.codebook_sizes), list(config.figure4.levels)
    fixed = runs_lib.with_overrides(base, {"objective.name": "hgr", "objective.loss": "hgr"})
    gauc = np.full((len(levels), len(sizes)), np.nan)
    cells = []
    for i, num_levels in enumerate(levels):
      for j, size in enumerate(sizes):
        values = []
        for seed in seeds[:int(config.figure4.num_seeds)]:
          cfg = runs_lib.with_overrides(fixed, {"hgr.num_levels": num_levels,
                                                "hgr.codebook_size": size, "seed": seed})
          context = job.context(f"Figure 4, GroupCE with L={num_levels}, K={size}, seed {seed}")
          values.append(runs_lib.cached_run(cfg, runs_dir, f"fig4-L{num_levels}-K{size}",
                                            dataset=dataset, context=context)["test"]["gauc"])
        gauc[i, j] = float(np.mean(values))
        cells.append({"levels": num_levels, "codebook_size": size, "test_gauc": values})
    report.heatmap_png(out_dir / "figure4.png", gauc, [f"L={l}" for l in levels],
                       [f"K={k}" for k in sizes], title=f"GroupCE test GAUC, {dataset.name}",
                       xlabel="codebook size K", ylabel="levels L")
    md = "| L \\ K | " + " | ".join(map(str, sizes)) + " |\n|" + "---|" * (len(sizes) + 1) + "\n"
    md += "\n".join(f"| {l} | " + " | ".join(f"{v:.4f}" for v in gauc[i]) + " |"
                    for i, l in enumerate(levels))
    (out_dir / "figure4.md").write_text(f"# Figure 4 on {dataset.name}: test GAUC (mean over "
                                        f"{config.figure4.num_seeds} seeds)\n\n{md}\n")
    (out_dir / "figure4.json").write_text(json.dumps({"cells": cells}, indent=2))
    log(md)
    summaries["figure4"] = gauc.tolist()
  log(where_written(out_dir, runs_dir))
  return summaries


def where_written(out_dir: pathlib.Path, runs_dir: pathlib.Path) -> str:
  """The closing lines of a reproduction: the folder of tables and plots, and of the runs.

  Example: ``where_written(Path("runs/kuairand_sig_quick"), Path("runs/kuairand_sig_quick/runs"))``
  -> "Tables and plots written to /abs/runs/kuairand_sig_quick/: table1.md, ...".
  """
  files = sorted(p.name for p in pathlib.Path(out_dir).iterdir() if p.is_file())
  return (f"Tables and plots written to {pathlib.Path(out_dir).resolve()}/: {', '.join(files)}\n"
          f"Training runs (checkpoints, metrics; reused when rerun) in "
          f"{pathlib.Path(runs_dir).resolve()}/")
