"""Early stopping on a validation metric, with state that survives a restart."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping


@dataclasses.dataclass
class EarlyStopping:
  """Tracks the best validation value; stops after ``patience`` evaluations without gain.

  Attributes:
    metric: name of the watched metric (e.g. "gauc").
    mode: "max" or "min".
    patience: evaluations without improvement before stopping (0 disables stopping).
    min_delta: an improvement must exceed this.
    best_value, best_step, evals_since_best, stopped: the running state.
  """

  metric: str
  mode: str = "max"
  patience: int = 5
  min_delta: float = 0.0
  best_value: float | None = None
  best_step: int = -1
  evals_since_best: int = 0
  stopped: bool = False

  def __post_init__(self):
    if self.mode not in ("max", "min"):
      raise ValueError(f"early stopping mode must be 'max' or 'min', got {self.mode!r}")
    if self.patience < 0:
      raise ValueError(f"early stopping patience must be >= 0, got {self.patience}")

  def update(self, value: float, step: int) -> bool:
    """Records one evaluation; returns True when ``value`` is a new best.

    A NaN value (e.g. GAUC with no qualifying user) never counts as a gain.
    """
    value = float(value)
    improved = math.isfinite(value) and (
        self.best_value is None
        or (self.mode == "max" and value > self.best_value + self.min_delta)
        or (self.mode == "min" and value < self.best_value - self.min_delta))
    if improved:
      self.best_value, self.best_step, self.evals_since_best = value, step, 0
    else:
      self.evals_since_best += 1
      if self.patience and self.evals_since_best >= self.patience:
        self.stopped = True
    return improved

  def last_step_without_gain(self, last_eval_step: int, eval_every: int, max_step: int) -> int:
    """The step where training stops if the watched metric does not improve again.

    For an honest ETA: the run cannot end later than this unless a coming
    evaluation sets a new best, and never later than ``max_step``.

    Args:
      last_eval_step: the step of the latest evaluation passed to :meth:`update`
        (or, before any, the step training starts from).
      eval_every: steps between evaluations.
      max_step: the step cap (``num_train_steps``).

    Before any evaluation the next one counts as the first best (a finite value
    always improves on none), so the window starts there.

    >>> early = EarlyStopping("gauc", patience=3)
    >>> early.last_step_without_gain(0, 10, 1000)  # first best at 10, then 3 more evaluations
    40
    >>> _ = early.update(0.6, 10), early.update(0.59, 20)
    >>> early.last_step_without_gain(20, 10, 1000), early.last_step_without_gain(20, 10, 30)
    (40, 30)
    """
    if self.stopped:
      return min(last_eval_step, max_step)
    if not self.patience:
      return max_step
    if self.best_value is None and self.evals_since_best == 0:
      stop = last_eval_step + (1 + self.patience) * eval_every
    else:
      stop = last_eval_step + (self.patience - self.evals_since_best) * eval_every
    return min(stop, max_step)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "EarlyStopping":
    return cls(**d)
