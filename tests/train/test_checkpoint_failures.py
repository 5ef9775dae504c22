"""Checkpoint failures: an unwritable checkpoint directory is refused before compiling,
and a save that runs out of disk names the step and the last good checkpoint, which
stays restorable (a rerun resumes from it and ends equal to an uninterrupted run)."""

import errno
import os
import pathlib

import orbax.checkpoint as ocp
import pytest

from hgrank_jax.train import checkpoint as ckpt_lib
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.state import Objective
from tests.train.helpers import logistic_objective, loop_config, tiny_dataset


def _never_initialised() -> Objective:
  """An objective whose init fails the test: the error must come before any tracing."""
  base = logistic_objective()

  def init(rng, batch):
    raise AssertionError("the model was initialised (traced) before the directory check")

  return Objective(init=init, loss=base.loss, predict=base.predict, name="spy")


def _latest(workdir):
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  return step, restored["state"]


def test_checkpoint_dir_without_write_permission_fails_before_compiling(tmp_path, monkeypatch):
  config = loop_config(num_train_steps=5)
  train_and_evaluate(config, tmp_path, objective=logistic_objective(), dataset=tiny_dataset())
  checkpoints = tmp_path / "checkpoints"
  os.chmod(checkpoints, 0o555)
  try:
    if os.geteuid() == 0:
      # root ignores mode bits; make the probe write fail the way it does for other users.
      real_write_text = pathlib.Path.write_text

      def write_text(self, *args, **kwargs):
        if self.parent == checkpoints:
          raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write_text(self, *args, **kwargs)

      monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    with pytest.raises(PermissionError, match=f"checkpoint directory {checkpoints} is not "
                       "writable .*Permission denied"):
      train_and_evaluate(loop_config(num_train_steps=10), tmp_path, objective=_never_initialised(),
                         dataset=tiny_dataset())
  finally:
    os.chmod(checkpoints, 0o755)


def test_checkpoint_path_that_is_a_file_fails_before_compiling(tmp_path):
  (tmp_path / "checkpoints").write_text("not a directory")
  with pytest.raises(PermissionError, match="checkpoint directory .* is not writable"):
    train_and_evaluate(loop_config(), tmp_path, objective=_never_initialised(),
                       dataset=tiny_dataset())


def _disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where,mode", [("save_call", "sync"), ("finalize", "sync"),
                                        ("save_call", "async"), ("finalize", "async")])
def test_out_of_disk_names_step_and_last_good_checkpoint(tmp_path, monkeypatch, where, mode):
  # Asynchronous: the failure of step 20's write surfaces at the next save (step 30).
  data = tiny_dataset()
  config = loop_config(num_train_steps=30, eval_every_steps=10, log_every_steps=5)
  config.checkpoint_mode = mode
  full = train_and_evaluate(config, tmp_path / "full", objective=logistic_objective(),
                            dataset=data)
  workdir = tmp_path / "run"
  if where == "save_call":
    # The disk is full when the save of step 20 starts.
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
      if step == 20:
        _disk_full()
      return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  else:
    # The arrays of step 20 are written to orbax's temporary directory, then the
    # commit (the atomic rename) fails: nothing of step 20 may become visible.
    from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top
    real_rename = async_path.rename

    async def rename(src, dst, *args, **kwargs):
      if pathlib.Path(str(dst)).name == "20":
        _disk_full()
      return await real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(async_path, "rename", rename)
  with pytest.raises(ckpt_lib.CheckpointSaveError,
                     match=r"checkpoint of step 20 \(the disk is full.*No space left on device"
                     r".*last good checkpoint is step 10 in .*checkpoints.*rerunning the same "
                     "command resumes from it") as failure:
    train_and_evaluate(config, workdir, objective=logistic_objective(), dataset=data)
  assert failure.value.errno == errno.ENOSPC
  monkeypatch.undo()
  step, state = _latest(workdir)
  assert step == 10 and int(state["step"]) == 10
  resumed = train_and_evaluate(config, workdir, objective=logistic_objective(), dataset=data)
  assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]


def test_first_save_failing_says_there_is_no_earlier_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(ocp.CheckpointManager, "save", _disk_full)
  with pytest.raises(ckpt_lib.CheckpointSaveError, match="step 5 .*no earlier checkpoint"):
    train_and_evaluate(loop_config(num_train_steps=10), tmp_path, objective=logistic_objective(),
                       dataset=tiny_dataset())
