"""Where training reports go: ``metrics.jsonl`` in the workdir and the console.

One JSON object per line, each with a ``kind`` ("train" for logging steps,
"eval" for validation evaluations, "final" for the test evaluation of the
best-on-validation parameters) and the ``step``. In a multi-process run only
process 0 writes (the others hold the same numbers). After a restart the lines
written past the restored step are dropped, so the evaluation records read as
one uninterrupted run (a stop adds one train record at the step it stopped).
(TensorBoard needs TensorFlow for its event writer, which is not a dependency;
metrics.jsonl is the record.)

The console (:class:`Progress`) says where a run is and when it will end: each
line can carry the run's place in a larger job (:class:`RunContext`, e.g.
``[run 3/12]``), the run's and the job's elapsed time, and an ETA to the step
where early stopping ends the run if the watched metric does not improve again
(the step cap only when it comes first), from the per-step time measured after
compilation with evaluations counted apart. Early stopping says so when it ends
a run, and floats are rounded (:func:`format_number`); the files keep full
precision.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, TextIO

from hgrank_jax.train.early_stopping import EarlyStopping

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


def format_number(value: Any) -> str:
  """A number as the console shows it: ints as they are, floats to 4 decimals
  (3 significant digits when smaller than 0.001), non-finite ones by name.

  >>> format_number(0.5983912979597626), format_number(3), format_number(2.5e-05)
  ('0.5984', '3', '2.5e-05')
  """
  if isinstance(value, (bool, int)):
    return str(value)
  value = float(value)
  if not math.isfinite(value):
    return str(value)
  if value != 0 and abs(value) < 1e-3:
    return f"{value:.3g}"
  return f"{value:.4f}"


def format_duration(seconds: float) -> str:
  """Seconds as ``<1s``, ``42s``, ``12m05s`` or ``1h27m``.

  >>> format_duration(0.2), format_duration(41.6), format_duration(725), format_duration(5197)
  ('<1s', '42s', '12m05s', '1h27m')
  """
  if seconds < 0.5:
    return "<1s"
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  minutes = int(round(seconds / 60))
  return f"{minutes // 60}h{minutes % 60:02d}m"


def _about(seconds: float) -> str:
  text = format_duration(seconds)
  return text if text.startswith("<") else "~" + text


def format_metrics(values: Mapping[str, Any]) -> str:
  """``gauc 0.5984  auc 0.6120 ...``: the float entries, rounded (counts are left out)."""
  return "  ".join(f"{k} {format_number(v)}" for k, v in values.items() if isinstance(v, float))


def summary_line(results: Mapping[str, Any], num_train_steps: int) -> str:
  """One line for a finished run's results (as ``train_and_evaluate`` returns them):
  where it stopped, the best step, and its validation and test metrics."""
  steps = results.get("steps")
  if results.get("stopped_early"):
    how = f"stopped early at step {steps} of {num_train_steps}"
  else:
    how = f"trained {steps} steps"
  valid, test = format_metrics(results.get("valid", {})), format_metrics(results.get("test", {}))
  return f"Best step {results.get('best_step')} ({how}): valid {valid} | test {test}"


@dataclasses.dataclass(frozen=True)
class RunContext:
  """Where one ``train_and_evaluate`` run sits in a larger job, for its console lines.

  Attributes:
    label: a short tag that prefixes every console line of the run in brackets,
      e.g. ``"run 3/12"`` -> ``[run 3/12] step 86/3000 ...``.
    title: what the run is, printed in its header line, e.g.
      ``"LogLoss + ListCE, seed 1"`` -> ``[run 3/12] LogLoss + ListCE, seed 1 ...``.
    job_started_at: ``time.time()`` when the job (all its runs) started; lines
      then show the job's elapsed time next to the run's.
  """

  label: str | None = None
  title: str | None = None
  job_started_at: float | None = None


class Progress:
  """The console lines of one run: header, progress with ETA, evaluations, the end.

  Timing: the first report's interval holds compilation, and an evaluation's
  first call compiles too, so the per-step time is measured between reports
  after the first, with the time of each evaluation (and its checkpoint) taken
  out; the ETA adds the evaluations still to come at their measured cost (the
  first one's, compilation included, until a second one is measured). Averaging
  over every step since compilation keeps the ETA steady from line to line.

  The ETA's target is the step where early stopping ends the run if the watched
  metric does not improve again
  (:meth:`~hgrank_jax.train.early_stopping.EarlyStopping.last_step_without_gain`);
  when that comes before the step cap the line names both, e.g.
  ``ETA ~35s (stops at step 400 unless gauc improves; at most 4m10s, to step 3000)``.
  """

  def __init__(self, total_steps: int, batch_size: int, *, eval_every_steps: int,
               start_step: int = 0, context: RunContext | None = None,
               stream: TextIO | None = None, enabled: bool = True,
               clock: Callable[[], float] = time.time):
    """Starts the run's clock.

    Args:
      total_steps: the step cap (``num_train_steps``).
      batch_size: examples per step, for examples/s.
      eval_every_steps: steps between evaluations.
      start_step: the step training starts (or resumes) from.
      context: the run's place in a job (label, title, job start time).
      stream: where lines go; ``sys.stdout`` at the time of writing by default.
      enabled: False on every process but 0 of a multi-process run.
      clock: seconds since the epoch (``time.time``; a fake one in tests).
    """
    self.enabled = enabled
    self.total_steps = int(total_steps)
    self.batch_size = int(batch_size)
    self.eval_every = int(eval_every_steps)
    self.context = context or RunContext()
    self.stream = stream
    self.clock = clock
    self.started_at = clock()
    self.start(start_step)

  def start(self, step: int) -> None:
    """Training starts (or resumes) at ``step``: nothing has been timed yet."""
    self._mark: tuple[int, float] | None = None  # (step, time) training was last timed from
    self._train_steps = 0
    self._train_seconds = 0.0
    self._eval_seconds: list[float] = []
    self._last_eval_step = (int(step) // self.eval_every) * self.eval_every

  def log(self, text: str) -> None:
    """Prints ``text``, after the run's ``[label]`` when it has one."""
    if not self.enabled:
      return
    prefix = f"[{self.context.label}] " if self.context.label else ""
    print(prefix + text, file=self.stream or sys.stdout, flush=True)

  def elapsed(self) -> str:
    """``elapsed 34s`` (the run's), with ``/ job 5m12s`` when the job's start is known."""
    now = self.clock()
    text = f"elapsed {format_duration(now - self.started_at)}"
    if self.context.job_started_at is not None:
      text += f" / job {format_duration(now - self.context.job_started_at)}"
    return text

  def header(self, workdir: Any) -> None:
    """The run's first line when it is part of a job: what it is, where, and the job's time."""
    if self.context.title is None and self.context.label is None:
      return
    title = self.context.title or "run"
    job = ""
    if self.context.job_started_at is not None:
      job = f" (job elapsed {format_duration(self.clock() - self.context.job_started_at)})"
    self.log(f"{title} in {workdir}{job}")

  def seconds_per_step(self) -> float | None:
    """Mean train time per step since compilation, evaluations left out (None: not yet known)."""
    return self._train_seconds / self._train_steps if self._train_steps else None

  def seconds_per_evaluation(self) -> float:
    """Measured time of one evaluation and its checkpoint (0 before the first)."""
    costs = self._eval_seconds[1:] or self._eval_seconds  # the first one compiles
    return sum(costs) / len(costs) if costs else 0.0

  def eta_seconds(self, step: int, target: int) -> float | None:
    """Seconds from ``step`` to the end of ``target``'s step (its evaluation included)."""
    per_step = self.seconds_per_step()
    if per_step is None:
      return None
    e = self.eval_every
    evaluations = target // e - (step - 1) // e  # the one at ``step`` comes after this report
    if target == self.total_steps and target % e:
      evaluations += 1  # the run ends with an evaluation
    return (target - step) * per_step + max(evaluations, 0) * self.seconds_per_evaluation()

  def report(self, step: int, loss: float, early: EarlyStopping | None = None) -> None:
    """The progress line at ``step``: loss, examples/s, elapsed time and the ETA."""
    now = self.clock()
    rate = ""
    if self._mark is not None and step > self._mark[0]:
      steps, seconds = step - self._mark[0], max(now - self._mark[1], 1e-9)
      self._train_steps += steps
      self._train_seconds += seconds
      rate = f"  {steps * self.batch_size / seconds:,.0f} examples/s"
    self._mark = (step, now)
    if not self.enabled:
      return
    self.log(f"step {step}/{self.total_steps}  loss {format_number(loss)}{rate}  "
             f"{self.elapsed()}  {self._eta_text(step, early)}")

  def _eta_text(self, step: int, early: EarlyStopping | None) -> str:
    to_cap = self.eta_seconds(step, self.total_steps)
    if to_cap is None:
      return "ETA from the next report (this interval includes compiling)"
    stop = self.total_steps
    if early is not None:
      stop = early.last_step_without_gain(self._last_eval_step, self.eval_every, self.total_steps)
    if stop >= self.total_steps:
      return f"ETA {_about(to_cap)}"
    return (f"ETA {_about(self.eta_seconds(step, stop))} (stops at step {stop} unless "
            f"{early.metric} improves; at most {format_duration(to_cap)}, to step "
            f"{self.total_steps})")

  def evaluated(self, step: int, values: Mapping[str, Any], early: EarlyStopping) -> None:
    """The evaluation line at ``step`` (rounded metrics and the best so far)."""
    self._last_eval_step = int(step)
    best = format_number(early.best_value) if early.best_value is not None else "none"
    self.log(f"  eval step {step}: {format_metrics(values)}  (best {early.metric} {best} at "
             f"step {early.best_step})")

  def resume_timing(self, step: int) -> None:
    """Training resumes after the evaluation (and checkpoint) at ``step``: that time is
    counted as evaluation time, not train time."""
    now = self.clock()
    if self._mark is not None and self._mark[0] == step:
      self._eval_seconds.append(now - self._mark[1])
    self._mark = (int(step), now)

  def stopped_early(self, step: int, early: EarlyStopping) -> None:
    """Says that early stopping ends the run here, and which step's weights it keeps."""
    if early.best_value is None:
      best = f"no evaluation gave a finite {early.metric}"
    else:
      best = (f"best {early.metric} {format_number(early.best_value)} at step {early.best_step}, "
              "whose weights are evaluated on test")
    self.log(f"Early stopping at step {step} of {self.total_steps}: valid {early.metric} has not "
             f"improved for {early.evals_since_best} evaluations (patience {early.patience}); "
             f"{best}.")

  def finished(self, results: Mapping[str, Any]) -> None:
    """The run's last line: its results and how long it took."""
    self.log(f"{summary_line(results, self.total_steps)}  ({self.elapsed()})")
