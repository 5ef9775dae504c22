"""Writes the Layer 2 experiment's results: tables, target checks and PNG plots.

:func:`write_results` takes the output of
:func:`hgrank_jax.experiments.blend.run_experiment` and writes, into one folder:
``table.md`` / ``table.csv`` (one row per blending variant), ``targets.md``
(each issue target with its measured numbers), ``summary.json``, and the plots
``loads.png`` (windowed load against target), ``lambda.png`` (shadow prices),
``reliability.png`` (before/after calibration with ECE) and
``lambda_check.png`` (controller vs bisection lambda*).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

PLOTTED = ("+ pacing (unshaded)", "+ shading with pacing", "+ governance")


def _columns(rows):
  keys = []
  for row in rows.values():
    keys += [k for k in row if k not in keys]
  return keys


def _fmt(value):
  return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def _main_columns(columns):
  """The issue's columns: value, engagement, load errors, oscillation, drift."""
  keep = ("platform value / request", "engagement / request", "oscillation amplitude",
          "oscillation amplitude (all controlled)", "score drift")
  return [c for c in columns if c in keep or c.endswith("load error")
          or c.endswith("load error (no shock)")]


def write_tables(rows, folder):
  """``table.csv`` with every metric and ``table.md`` with the issue's columns."""
  columns = _columns(rows)
  with open(os.path.join(folder, "table.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["variant"] + columns)
    for name, row in rows.items():
      writer.writerow([name.strip()] + [row.get(c, float("nan")) for c in columns])
  columns = _main_columns(columns)
  lines = ["| variant | " + " | ".join(columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  for name, row in rows.items():
    lines.append(f"| {name.strip()} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
  with open(os.path.join(folder, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def target_checks(results):
  """The issue's targets with measured numbers: ``[(target, measured, met)]``."""
  rows, checks, lines = results["rows"], results["checks"], results["lines"]
  traffic = results["traffic"]
  capped = [lines[b] for b in range(len(lines)) if np.isfinite(traffic.caps[b])]
  governed, ungoverned = rows["+ governance"], rows["+ shading with pacing"]
  out = []
  for line in capped:
    error = governed[f"{line} load error (no shock)"]
    excess = governed[f"{line} max excess (no shock)"]
    out.append((f"{line}: windowed load within 2% (MARE) of its cap after warm-up, never over "
                f"by > 5% (outside supply shocks; with shocks in brackets)",
                f"MARE {error:.2%}, max excess {excess:.2%} "
                f"[{governed[f'{line} load error']:.2%}, {governed[f'{line} max excess']:.2%}]",
                error <= 0.02 and excess <= 0.05))
  out.append(("PI lambda within 5% of bisection lambda* (closed-form F)",
              f"{checks['lambda_controller']:.4f} vs {checks['lambda_star']:.4f} "
              f"(gap {checks['relative_gap']:.2%})", checks["relative_gap"] <= 0.05))
  out.append(("shading: more value than unshaded bidding at the same cost (closed-form F)",
              f"{checks['shaded_value']:.4f} vs {checks['scaled_value']:.4f}",
              checks["shaded_value"] > checks["scaled_value"]))
  paced = rows["+ pacing (unshaded)"]
  for line in capped:
    shaded_ratio = ungoverned[f"{line} value / spend"]
    plain_ratio = paced[f"{line} value / spend"]
    out.append((f"simulator, {line}: value per unit of score spent, shaded vs unshaded",
                f"{shaded_ratio:.4f} vs {plain_ratio:.4f} (value per won slot "
                f"{ungoverned[f'{line} value / won slot']:.4f} vs "
                f"{paced[f'{line} value / won slot']:.4f})", shaded_ratio > plain_ratio))
  spend = results.get("spend_check")
  if spend:
    shaded, uniform = spend["shading"], spend["uniform throttle"]
    out.append((f"simulator, ad capped on score spent per slot ({spend['cap']:.4f}): ad value "
                "per request, shaded vs uniform throttle (spend per slot and its window "
                "error in brackets)",
                f"{shaded['ad value / request']:.4f} vs {uniform['ad value / request']:.4f} "
                f"[{shaded['ad spend / slot']:.4f}, {shaded['ad spend error']:.2%} vs "
                f"{uniform['ad spend / slot']:.4f}, {uniform['ad spend error']:.2%}]",
                shaded["ad value / request"] > uniform["ad value / request"]
                and shaded["ad spend / slot"] <= uniform["ad spend / slot"] * 1.01))
  out.append(("without governance: deflation or oscillation shows (drift, amplitude)",
              f"drift {ungoverned['score drift']:+.2%}, amplitude "
              f"{ungoverned['oscillation amplitude']:.3f}",
              abs(ungoverned["score drift"]) > 0.02 or ungoverned["oscillation amplitude"] > 0))
  out.append(("with governance: score drift < 2%",
              f"drift {governed['score drift']:+.2%} (trend {governed['score drift trend']:+.2%})",
              abs(governed["score drift"]) < 0.02 and abs(governed["score drift trend"]) < 0.02))
  ratio = governed["oscillation amplitude"] / ungoverned["oscillation amplitude"]
  key = "oscillation amplitude (all controlled)"
  out.append(("with governance: oscillation amplitude at most half (acting controllers; all "
              "controlled, slack floor included, in brackets)",
              f"{governed['oscillation amplitude']:.3f} vs "
              f"{ungoverned['oscillation amplitude']:.3f} (ratio {ratio:.2f}) "
              f"[{governed[key]:.3f} vs {ungoverned[key]:.3f}, ratio "
              f"{governed[key] / ungoverned[key]:.2f}]", ratio <= 0.5))
  for line, (before, after) in results["fitted"]["ece"].items():
    out.append((f"calibration lowers held-out ECE: {line}", f"{before:.4f} -> {after:.4f}",
                after < before))
  for line, (pooled, conditional) in results["fitted"]["segment_ece"].items():
    out.append((f"(extra) conditional calibration per user segment, mean within-segment ECE: "
                f"{line}", f"pooled {pooled:.4f} -> per segment {conditional:.4f}",
                conditional < pooled))
  return out


def write_targets(results, folder):
  """``targets.md``: each target, its measured numbers and whether it was met."""
  checks = target_checks(results)
  lines = ["| target | measured | met |", "|---|---|---|"]
  lines += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in checks]
  with open(os.path.join(folder, "targets.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return checks


def plot_loads(results, folder):
  """``loads.png`` (windowed load vs target per controlled line) and ``lambda.png``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  traffic, lines, runs = results["traffic"], results["lines"], results["runs"]
  caps = np.asarray(traffic.caps, float)
  floors = np.nan_to_num(np.asarray(traffic.floors, float))
  controlled = [b for b in range(len(lines)) if np.isfinite(caps[b]) or floors[b] > 0]
  days = np.arange(traffic.num_steps) / traffic.steps_per_day
  fig, axes = plt.subplots(len(controlled), 1, figsize=(7, 2.0 * len(controlled)), sharex=True)
  for ax, b in zip(np.atleast_1d(axes), controlled):
    for name in PLOTTED:
      ax.plot(days, runs[name]["window_load"][:, b], lw=1, label=name.strip("+ "))
    target = caps[b] if np.isfinite(caps[b]) else floors[b]
    ax.axhline(target, color="k", ls="--", lw=0.8,
               label="cap" if np.isfinite(caps[b]) else "floor")
    ax.axvline(traffic.warmup_days, color="grey", lw=0.6)
    for line, start, duration, _ in traffic.shocks:
      if line == lines[b]:
        ax.axvspan(start, start + duration, color="orange", alpha=0.15, label="supply shock")
    ax.set_ylabel(f"{lines[b]} load")
  np.atleast_1d(axes)[0].legend(fontsize=6, ncol=3, loc="upper right")
  np.atleast_1d(axes)[-1].set_xlabel("day")
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "loads.png"), dpi=80)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(PLOTTED), figsize=(9, 2.4), sharey=True)
  for ax, name in zip(axes, PLOTTED):
    for b in controlled:
      ax.plot(days, runs[name]["lam"][:, b], lw=1, label=lines[b])
    ax.set_title(name.strip("+ "), fontsize=8)
    ax.set_xlabel("day")
  axes[0].set_ylabel("lambda / mu")
  axes[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "lambda.png"), dpi=80)
  plt.close(fig)


def plot_reliability(results, folder):
  """``reliability.png``: held-out reliability per line, raw and calibrated, with ECE."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves, ece = results["fitted"]["curves"], results["fitted"]["ece"]
  fig, axes = plt.subplots(1, len(curves), figsize=(2.4 * len(curves), 2.6), sharey=True)
  for ax, (line, (before, after)) in zip(np.atleast_1d(axes), curves.items()):
    for (mean_prob, mean_label, count), label in ((before, "raw"), (after, "calibrated")):
      keep = np.asarray(count) > 0
      ax.plot(np.asarray(mean_prob)[keep], np.asarray(mean_label)[keep], "o-", ms=2, lw=1,
              label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_title(f"{line}\nECE {ece[line][0]:.3f} -> {ece[line][1]:.3f}", fontsize=8)
    ax.set_xlabel("predicted")
  np.atleast_1d(axes)[0].set_ylabel("observed click rate")
  np.atleast_1d(axes)[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "reliability.png"), dpi=80)
  plt.close(fig)


def plot_lambda_check(results, folder):
  """``lambda_check.png``: the PI controller's lambda against the bisection lambda*."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  checks = results["checks"]
  fig, ax = plt.subplots(figsize=(5, 2.4))
  ax.plot(checks["trajectory"], lw=1, label="PI controller")
  ax.axhline(checks["lambda_star"], color="k", ls="--", lw=0.8, label="lambda* (bisection)")
  ax.set_xlabel("step")
  ax.set_ylabel("lambda")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(folder, "lambda_check.png"), dpi=80)
  plt.close(fig)


def write_results(results, folder):
  """Writes every table, target check and plot into ``folder``; returns the checks."""
  os.makedirs(folder, exist_ok=True)
  write_tables(results["rows"], folder)
  checks = write_targets(results, folder)
  plot_loads(results, folder)
  plot_reliability(results, folder)
  plot_lambda_check(results, folder)
  summary = {"rows": results["rows"],
             "ece": {k: {"raw": v[0], "calibrated": v[1]}
                     for k, v in results["fitted"]["ece"].items()},
             "segment_ece": {k: {"pooled": v[0], "conditional": v[1]}
                             for k, v in results["fitted"]["segment_ece"].items()},
             "lambda_check": {k: v for k, v in results["checks"].items() if k != "trajectory"},
             "alpha": np.asarray(results["fitted"]["alpha"]).tolist(),
             "spend_check": results.get("spend_check"),
             "true_segment_effect": np.exp(results["segment_effect"]).tolist(),
             "targets": [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in checks]}
  with open(os.path.join(folder, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return checks
