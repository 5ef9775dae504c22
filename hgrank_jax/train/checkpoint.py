"""Checkpoints in the workdir: orbax for arrays, JSON for loop state, and a config guard.

Each checkpoint holds the whole train state pytree (params, optimizer and model
state, best-on-validation weights, step, RNG) plus a JSON record of the loop
state (data-iterator position, early-stopping state). ``workdir/config.json``
records the config that created the workdir; resuming with a different config is
refused, naming the keys that differ.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import jax
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


def prepare_workdir(workdir: str | os.PathLike, config_dict: Mapping[str, Any],
                    *, ignore_keys: tuple[str, ...] = ()) -> pathlib.Path:
  """Creates ``workdir`` (or checks an existing one) before any compilation.

  Raises:
    PermissionError: the workdir cannot be created or written.
    ValueError: the workdir was created by a different config (the message lists
      the differing keys, ignoring ``ignore_keys``).
  """
  path = pathlib.Path(workdir).expanduser().resolve()
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write_probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise PermissionError(f"workdir {path} is not writable: {e}") from e
  config_path = path / CONFIG_FILE
  current = json.loads(json.dumps(dict(config_dict), default=str))
  if config_path.exists():
    saved = json.loads(config_path.read_text())
    a, b = flatten_dict(saved), flatten_dict(current)
    differing = sorted(k for k in set(a) | set(b)
                       if a.get(k, "<missing>") != b.get(k, "<missing>") and k not in ignore_keys)
    if differing:
      details = "; ".join(f"{k}: workdir has {a.get(k, '<missing>')!r}, config has "
                          f"{b.get(k, '<missing>')!r}" for k in differing[:10])
      raise ValueError(
          f"workdir {path} holds a run of a different config ({len(differing)} keys differ: "
          f"{details}). Use a new --workdir, or delete {path} to start over.")
  else:
    config_path.write_text(json.dumps(current, indent=2, sort_keys=True))
  return path


class Checkpointer:
  """Saves and restores (state pytree, loop-state JSON) pairs under ``workdir/checkpoints``."""

  def __init__(self, workdir: pathlib.Path, *, max_to_keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(pathlib.Path(workdir) / CHECKPOINT_DIR, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, loop_state: Mapping[str, Any]) -> None:
    """Writes a checkpoint for ``step`` and waits until it is complete on disk."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(dict(loop_state))), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores ``step`` into arrays shaped and sharded like ``abstract_state``."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["loop"])

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) for restoring into the layout of ``tree``."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
