"""Renders summarised tables as markdown, CSV and JSON, and heatmaps as PNG.

Markdown cells are rounded to 4 decimals (more only where an interval's bounds
would otherwise print equal); CSV and JSON keep full precision.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

from hgrank_jax.experiments.tables import MIN_SEEDS_FOR_INTERVAL


def _fmt(value: float, digits: int = 4) -> str:
  return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _metric_label(metric: str) -> str:
  return "LogLoss" if metric == "logloss" else metric.upper()


def _interval(low: float, high: float, n: int) -> str:
  """``[low, high]`` with as many decimals (4 to 6) as it takes to tell them apart."""
  if not (math.isfinite(low) and math.isfinite(high)):
    return f"[n/a ({n} seed{'s' if n != 1 else ''})]"
  digits = 4
  while digits < 6 and _fmt(low, digits) == _fmt(high, digits):
    digits += 1
  return f"[{_fmt(low, digits)}, {_fmt(high, digits)}]"


def table_header(metrics: Sequence[str], reference_name: str) -> list[str]:
  """The column names of :func:`markdown_table`.

  Example: ``table_header(["gauc"], "A")`` -> ["row", "seeds", "GAUC",
  "ΔGAUC vs A [95% t CI over ≥3 seeds]"].
  """
  return (["row", "seeds"] + [_metric_label(m) for m in metrics]
          + [f"Δ{_metric_label(m)} vs {reference_name} [95% t CI over ≥{MIN_SEEDS_FOR_INTERVAL} "
             "seeds]" for m in metrics])


def markdown_table(table: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                   reference_name: str) -> str:
  """Mean ± std per metric, and the paired difference to the reference with its 95% CI.

  Rows come from ``tables.summarise``; a difference whose interval is NaN (fewer
  than 3 paired seeds) prints as ``+0.0014 [n/a (2 seeds)]``.
  """
  header = table_header(metrics, reference_name)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for e in table:
    cells = [e["name"], str(e["seeds"])]
    cells += [f"{_fmt(e[f'{m}_mean'])} ± {_fmt(e[f'{m}_std'])}" for m in metrics]
    for m in metrics:
      if e["name"] == reference_name:
        cells.append("—")
      else:
        cells.append(f"{e[f'{m}_diff_mean']:+.4f} "
                     + _interval(e[f"{m}_diff_low"], e[f"{m}_diff_high"], e[f"{m}_diff_n"]))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_table(path_stem: pathlib.Path, table: Sequence[Mapping[str, Any]],
                metrics: Sequence[str], reference_name: str, *, title: str,
                notes: Sequence[str] = (), extra: Mapping[str, Any] | None = None) -> str:
  """Writes ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json``; returns the markdown."""
  path_stem = pathlib.Path(path_stem)
  path_stem.parent.mkdir(parents=True, exist_ok=True)
  md = f"# {title}\n\n" + markdown_table(table, metrics, reference_name) + "\n"
  if notes:
    md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
  path_stem.with_suffix(".md").write_text(md)
  keys = sorted({k for e in table for k in e if k != "chosen"})
  with path_stem.with_suffix(".csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["chosen"] + keys)
    writer.writeheader()
    for e in table:
      writer.writerow({**{k: e.get(k) for k in keys}, "chosen": json.dumps(e.get("chosen", {}))})
  path_stem.with_suffix(".json").write_text(json.dumps(
      {"title": title, "rows": list(table), "notes": list(notes), **(extra or {})}, indent=2,
      default=str))
  return md


def heatmap_png(path: pathlib.Path, values, row_labels: Sequence[str],
                col_labels: Sequence[str], *, title: str, xlabel: str, ylabel: str) -> None:
  """A heatmap with the value printed in every cell."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  values = np.asarray(values, np.float64)
  fig, ax = plt.subplots(figsize=(1.2 * len(col_labels) + 2, 1.0 * len(row_labels) + 1.5))
  image = ax.imshow(values, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(col_labels)), col_labels)
  ax.set_yticks(range(len(row_labels)), row_labels)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  finite = values[np.isfinite(values)]
  middle = finite.mean() if finite.size else 0.0
  for i in range(values.shape[0]):
    for j in range(values.shape[1]):
      ax.text(j, i, _fmt(values[i, j]), ha="center", va="center",
              color="white" if values[i, j] < middle else "black", fontsize=9)
  fig.colorbar(image, ax=ax)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def convergence_png(path: pathlib.Path, curves: Mapping[str, Sequence[tuple[int, float]]], *,
                    title: str, ylabel: str = "validation GAUC") -> None:
  """One line per run: (training step, validation metric) points."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name, points in curves.items():
    if points:
      steps, values = zip(*points)
      ax.plot(steps, values, marker="o", markersize=3, label=name)
  ax.set_xlabel("training step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
