"""Preemption: turn SIGTERM and SIGINT into "finish the step, checkpoint, exit 0".

Cluster schedulers (Slurm, Kubernetes, preemptible/spot VMs, TPU maintenance
events) send SIGTERM some seconds before killing a job; Ctrl-C sends SIGINT.
:class:`PreemptionGuard` installs handlers that only record the request; the
train loop polls :attr:`PreemptionGuard.requested` after each step, saves a
checkpoint (state, RNG, data position, early-stopping state) and returns, so
the next run of the same command resumes there. A second SIGINT while the
first is being handled raises ``KeyboardInterrupt`` (an impatient Ctrl-C still
stops the process). Leaving the ``with`` block restores the previous handlers,
so no global state stays behind. SIGKILL cannot be caught: after it the next
run resumes from the last checkpoint written (checkpoints are atomic).

Handlers can only be installed from the main thread; elsewhere (a notebook
worker thread, a test runner thread) the guard is inert and says so.

For deterministic tests, ``$HGRANK_SELF_SIGNAL`` makes the process signal
itself right after a given step: ``"SIGTERM@7"``, ``"SIGTERM@3,SIGKILL@12"``.
It is read only by :func:`maybe_self_signal`, which the loop calls after each
step; nothing else changes.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

SELF_SIGNAL_ENV = "HGRANK_SELF_SIGNAL"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
  """Context manager that records SIGTERM/SIGINT instead of dying.

  Attributes:
    requested: the name of the first signal received ("SIGTERM"/"SIGINT"), or None.
    active: whether handlers were installed (main thread only).

  >>> with PreemptionGuard() as guard:
  ...   guard.requested is None
  True
  """

  def __init__(self, signals: tuple[int, ...] = HANDLED_SIGNALS):
    self.signals = tuple(signals)
    self.requested: str | None = None
    self.active = False
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if self.requested is None:
      self.requested = signal.Signals(signum).name
      print(f"Received {self.requested}: finishing the current step, then saving a checkpoint.",
            flush=True)

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal.signal only works in the main thread
    for signum in self.signals:
      self._previous[signum] = signal.getsignal(signum)
      signal.signal(signum, self._handle)
    self.active = True
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    self._previous.clear()
    self.active = False


def parse_self_signals(value: str | None) -> dict[int, signal.Signals]:
  """``"SIGTERM@3,SIGKILL@12"`` -> ``{3: SIGTERM, 12: SIGKILL}``.

  Raises:
    ValueError: on a malformed entry or an unknown signal name.
  """
  out = {}
  for entry in filter(None, (value or "").replace(" ", "").split(",")):
    name, sep, step = entry.partition("@")
    if not sep or not step.isdigit() or not hasattr(signal.Signals, name):
      raise ValueError(f"${SELF_SIGNAL_ENV}: expected entries like 'SIGTERM@7', got {entry!r}")
    out[int(step)] = signal.Signals[name]
  return out


def maybe_self_signal(step: int) -> None:
  """Sends this process the signal ``$HGRANK_SELF_SIGNAL`` schedules after ``step`` (tests)."""
  value = os.environ.get(SELF_SIGNAL_ENV)
  if not value:
    return
  sig = parse_self_signals(value).get(int(step))
  if sig is not None:
    os.kill(os.getpid(), sig)
