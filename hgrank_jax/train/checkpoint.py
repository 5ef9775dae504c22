"""Checkpoints in the workdir: orbax for arrays, JSON for loop state, and a config guard.

Each checkpoint holds the whole train state pytree (params, optimizer and model
state, best-on-validation weights, step, RNG) plus a JSON record of the loop
state (data-iterator position, early-stopping state). ``workdir/config.json``
records the config that created the workdir; resuming with a different config is
refused, naming the keys that differ.

Failures are reported before they cost anything: a workdir or checkpoint
directory that cannot be written is refused before compilation, and a save that
fails (a full disk, a quota, a vanished mount) raises :class:`CheckpointSaveError`
naming the step and the last good checkpoint. orbax writes each checkpoint into
a temporary directory and renames it when complete, so a failed or killed save
never replaces the previous checkpoint, which stays restorable.

Saves can be asynchronous (``Checkpointer(asynchronous=True)``): the state is
copied on the device and written while training goes on, by a writer thread that
runs orbax's save (one process; its synchronous part, copying to the host and
laying out the directory, takes tens of milliseconds, hundreds of small steps on
a GPU) or by orbax's own background write (several processes, whose saves must
stay in step with the collective calls of training). The next save, :meth:`Checkpointer.wait` and :meth:`Checkpointer.close` first wait
for it, and a failure raises :class:`CheckpointSaveError` naming the step that
failed, as a synchronous save would. A process killed mid-write loses only that
checkpoint: the previous one is still the latest. When saves are requested
faster than orbax writes them (a small model evaluated every few milliseconds
of device time), ``save(..., skip_if_busy=True)`` skips a periodic save while
the previous one is still being written instead of waiting for it.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import threading
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dotted config keys)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten_dict(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_writable(directory: pathlib.Path, what: str) -> None:
  """Raises PermissionError unless a file can be created (and removed) in ``directory``."""
  probe = pathlib.Path(directory) / f".write_probe.{os.getpid()}"
  try:
    if not pathlib.Path(directory).is_dir():
      raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise PermissionError(
        f"{what} {directory} is not writable ({e}); checkpoints could not be saved. Fix its "
        f"permissions or choose another --workdir.") from e


# Keys added to the configs after runs were made, with the value that gives the
# old behaviour. A config holding such a key at that value is the same run as one
# without the key: it hashes alike (experiments.runs.config_hash) and passes the
# workdir guard, so adding a key never orphans finished runs.
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "checkpoint_every_steps": 0,
    "data_source": "memory",
    "data_path": "",
    "stream_window_blocks": 8,
}


# Keys that say how a run executes, not what it computes: the same run gives the
# same parameters (within 1e-6; vmapped seeds: metrics within 1e-3, their batched
# matrix products summing in another order) at any value, so they never enter a
# run's identity and a workdir may be resumed with another value (e.g. on another
# backend).
EXECUTION_KEYS = ("steps_per_dispatch", "data_placement", "checkpoint_mode", "vmap_seeds")
CHECKPOINT_MODES = ("auto", "async", "async_skip", "sync")


def identity_config(config_dict: Mapping[str, Any]) -> dict[str, Any]:
  """``config_dict`` without execution keys and the top-level keys at their neutral default.

  >>> identity_config({"seed": 0, "checkpoint_every_steps": 0, "steps_per_dispatch": 32})
  {'seed': 0}
  """
  return {k: v for k, v in dict(config_dict).items()
          if not (k in NEUTRAL_DEFAULTS and v == NEUTRAL_DEFAULTS[k]) and k not in EXECUTION_KEYS}


def prepare_workdir(workdir: str | os.PathLike, config_dict: Mapping[str, Any],
                    *, ignore_keys: tuple[str, ...] = ()) -> pathlib.Path:
  """Creates ``workdir`` (or checks an existing one) before any compilation.

  Raises:
    PermissionError: the workdir, or its existing checkpoint directory, cannot be
      created or written.
    ValueError: the workdir was created by a different config (the message lists
      the differing keys, ignoring ``ignore_keys``).
  """
  path = pathlib.Path(workdir).expanduser().resolve()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"workdir {path} is not writable: {e}") from e
  check_writable(path, "workdir")
  if (path / CHECKPOINT_DIR).exists():
    check_writable(path / CHECKPOINT_DIR, "checkpoint directory")
  config_path = path / CONFIG_FILE
  current = json.loads(json.dumps(dict(config_dict), default=str))
  if config_path.exists():
    saved = json.loads(config_path.read_text())
    a, b = flatten_dict(identity_config(saved)), flatten_dict(identity_config(current))
    differing = sorted(k for k in set(a) | set(b)
                       if a.get(k, "<missing>") != b.get(k, "<missing>") and k not in ignore_keys)
    if differing:
      details = "; ".join(f"{k}: workdir has {a.get(k, '<missing>')!r}, config has "
                          f"{b.get(k, '<missing>')!r}" for k in differing[:10])
      raise ValueError(
          f"workdir {path} holds a run of a different config ({len(differing)} keys differ: "
          f"{details}). Use a new --workdir, or delete {path} to start over.")
  else:
    # Written atomically: the processes of a multi-host run may all get here.
    temporary = config_path.with_name(f".{CONFIG_FILE}.{os.getpid()}")
    temporary.write_text(json.dumps(current, indent=2, sort_keys=True))
    os.replace(temporary, config_path)
  return path


class CheckpointSaveError(OSError):
  """A checkpoint could not be written; the message names the step and the last good one."""


class Checkpointer:
  """Saves and restores (state pytree, loop-state JSON) pairs under ``workdir/checkpoints``.

  In a multi-process run every process calls :meth:`save` and :meth:`restore`
  (orbax coordinates them: each writes its shards, process 0 the metadata and
  the JSON loop state, and the checkpoint is committed once all are done).

  Args:
    workdir: the run's directory; checkpoints go to ``workdir/checkpoints``.
    max_to_keep: the newest checkpoints kept.
    asynchronous: :meth:`save` returns once the write has started; it finishes
      in the background (see the module docstring).
  """

  def __init__(self, workdir: pathlib.Path, *, max_to_keep: int = 2, asynchronous: bool = False):
    if max_to_keep < 1:
      raise ValueError(f"max_checkpoints must be >= 1, got {max_to_keep}")
    self.directory = pathlib.Path(workdir) / CHECKPOINT_DIR
    self.asynchronous = asynchronous
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_background_delete=asynchronous)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: tuple[int, int | None] | None = None  # (step, last good step before it)
    self._threaded = asynchronous and jax.process_count() == 1
    self._thread: threading.Thread | None = None
    self._thread_error: BaseException | None = None

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _error(self, step: int, previous: int | None, e: OSError) -> CheckpointSaveError:
    reason = "the disk is full" if e.errno == errno.ENOSPC else "the write failed"
    last = (f"the last good checkpoint is step {previous} in {self.directory}; rerunning the "
            "same command resumes from it" if previous is not None else
            "there is no earlier checkpoint; a rerun starts from scratch")
    return CheckpointSaveError(
        e.errno, f"could not save the checkpoint of step {step} ({reason}: {e}); {last} once "
        "the problem is fixed.")

  def busy(self) -> bool:
    """Whether an asynchronous save is still being written."""
    if self._pending is None:
      return False
    if self._threaded:
      return self._thread is not None and self._thread.is_alive()
    return self._manager.is_saving_in_progress()

  def wait(self) -> None:
    """Waits until the save in progress (if any) is complete on disk.

    Raises:
      CheckpointSaveError: that save failed; the message names its step and the
        checkpoint before it, which is untouched.
    """
    if self._pending is None:
      return
    step, previous = self._pending
    self._pending = None
    try:
      if self._thread is not None:
        self._thread.join()
        self._thread = None
        error, self._thread_error = self._thread_error, None
        if error is not None:
          raise error
      self._manager.wait_until_finished()
    except OSError as e:
      raise self._error(step, previous, e) from e

  def _write(self, step: int, state: Any, loop_state: Mapping[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(dict(loop_state))),
                       force=True)

  def _write_in_thread(self, step: int, state: Any, loop_state: Mapping[str, Any]) -> None:
    try:
      self._write(step, state, loop_state)
      self._manager.wait_until_finished()
    except BaseException as e:  # pylint: disable=broad-except
      self._thread_error = e  # raised by wait(), in the training thread

  def save(self, step: int, state: Any, loop_state: Mapping[str, Any], *,
           skip_if_busy: bool = False) -> bool:
    """Writes a checkpoint for ``step``: complete on return, or, when asynchronous,
    started (the state is copied first, so the caller may donate its buffers).

    ``skip_if_busy`` (asynchronous, single process): return False without saving
    while the previous save is still being written (several processes always
    save: they must agree on every checkpoint). Returns whether it saved.

    Raises:
      CheckpointSaveError: this write failed (e.g. ENOSPC), or, when
        asynchronous, the previous one did; the message names the failed step
        and the last good checkpoint, which is untouched.
    """
    if skip_if_busy and self.asynchronous and jax.process_count() == 1 and self.busy():
      return False
    self.wait()
    previous = self._manager.latest_step()
    if self.asynchronous:
      state = _copy_on_device(state)
    if self._threaded:
      self._pending = (step, previous)
      self._thread = threading.Thread(target=self._write_in_thread,
                                      args=(step, state, dict(loop_state)),
                                      name=f"checkpoint-{step}", daemon=True)
      self._thread.start()
      return True
    try:
      self._write(step, state, loop_state)
      self._pending = (step, previous)
      if not self.asynchronous:
        self.wait()
    except OSError as e:
      self._pending = None
      raise self._error(step, previous, e) from e
    return True

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores ``step`` into arrays shaped and sharded like ``abstract_state``."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["loop"])

  def close(self, *, wait: bool = True) -> None:
    """Finishes the save in progress (raising :class:`CheckpointSaveError` if it failed,
    unless ``wait`` is False: a run already failing for another reason) and closes."""
    failure = None
    if wait:
      try:
        self.wait()
      except CheckpointSaveError as e:
        failure = e
    elif self._thread is not None:
      self._thread.join()
    self._thread, self._thread_error = None, None
    self._pending = None
    try:
      self._manager.close()  # also waits for orbax's background work
    except OSError:
      if wait and failure is None:
        raise
    if failure is not None:
      raise failure


@jax.jit
def _copy_on_device(tree: Any) -> Any:
  """Fresh buffers holding ``tree``, one dispatch: a save in progress must not read
  buffers the next train step donates."""
  return jax.tree.map(jnp.copy, tree)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) for restoring into the layout of ``tree``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
