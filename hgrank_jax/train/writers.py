"""Where training reports go: ``metrics.jsonl`` in the workdir and a console progress line.

One JSON object per line, each with a ``kind`` ("train" for logging steps,
"eval" for validation evaluations, "final" for the test evaluation of the
best-on-validation parameters) and the ``step``. In a multi-process run only
process 0 writes (the others hold the same numbers). After a restart the lines
written past the restored step are dropped, so the evaluation records read as
one uninterrupted run (a stop adds one train record at the step it stopped). (TensorBoard needs TensorFlow for its event writer, which is
not a dependency; metrics.jsonl is the record.)
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from typing import Any, Mapping

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
  try:
    value = float(value)
  except (TypeError, ValueError):
    return value
  return value if math.isfinite(value) else str(value)


class MetricsWriter:
  """Appends JSON lines to ``workdir/metrics.jsonl`` (only on process 0)."""

  def __init__(self, workdir: pathlib.Path, *, resume_step: int | None, enabled: bool = True):
    self.path = pathlib.Path(workdir) / METRICS_FILE
    self.enabled = enabled
    if enabled and self.path.exists():
      keep = []
      for line in self.path.read_text().splitlines():
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by a crash
        if resume_step is not None and record.get("step", 0) <= resume_step and record.get(
            "kind") != "final":
          keep.append(line)
      self.path.write_text("".join(l + "\n" for l in keep))

  def write(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record = {"kind": kind, "step": int(step), "time": time.time()}
    record.update({k: _plain(v) for k, v in values.items()})
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")


def read_metrics(workdir: pathlib.Path | str, kind: str | None = None) -> list[dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl``, optionally of one kind."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if kind is None or r.get("kind") == kind]


class Progress:
  """A one-line console report: step, loss, examples/s and ETA."""

  def __init__(self, total_steps: int, batch_size: int, *, start_step: int = 0, stream=sys.stdout,
               enabled: bool = True):
    self.enabled = enabled  # False on every process but 0 of a multi-process run
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.stream = stream
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def report(self, step: int, loss: float, extra: str = "") -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    seconds = max(now - self._last_time, 1e-9)
    rate = steps * self.batch_size / seconds
    eta = (self.total_steps - step) * seconds / steps
    self.stream.write(f"step {step}/{self.total_steps}  loss {loss:.5f}  {rate:,.0f} examples/s  "
                      f"ETA {eta:.0f}s {extra}\n")
    self.stream.flush()
    self._last_step, self._last_time = step, now
