"""Several steps per dispatch, device-resident data and asynchronous checkpoints train the
same run as one host-fed step per call with synchronous saves: the same parameters
(<= 1e-6), checkpoints at the same steps, the same metric records, the NaN guard naming
the same step, and preemption and SIGKILL resumes ending equal to an uninterrupted run."""

import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hgrank_jax.data import ArrayBatcher, chunks
from hgrank_jax.train import preemption
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.parallel.sharding import data_mesh
from hgrank_jax.train.writers import read_metrics
from tests.train.helpers import logistic_objective, loop_config, tiny_dataset

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(steps_per_dispatch, placement, mode="sync", **overrides):
  config = loop_config(**{"num_train_steps": 23, "eval_every_steps": 10, "log_every_steps": 5,
                          **overrides})
  config.checkpoint_every_steps = 4  # boundaries at 4, 5, 8, 10, 12, ... and the end, 23
  config.steps_per_dispatch = steps_per_dispatch
  config.data_placement = placement
  config.checkpoint_mode = mode
  return config


def _checkpoints(workdir):
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  steps = sorted(manager.all_steps())
  restored = manager.restore(steps[-1], args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  return steps, restored["state"], dict(restored["loop"])


def _strip(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _assert_same_run(a, b, atol=1e-6, kinds=("train", "eval")):
  """Same checkpoint steps, state and loop state, and the same ``kinds`` of metric records
  (an interrupted run logs one extra train record, at the interruption)."""
  steps_a, state_a, loop_a = _checkpoints(a)
  steps_b, state_b, loop_b = _checkpoints(b)
  assert steps_a == steps_b
  # Evaluated on the devices, the early-stopping values are float32 ones.
  assert loop_a["data"] == loop_b["data"]
  assert loop_a["early_stopping"] == pytest.approx(loop_b["early_stopping"], abs=max(atol, 1e-6))
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)
  for kind in kinds:
    ra, rb = _strip(read_metrics(a, kind)), _strip(read_metrics(b, kind))
    assert [r["step"] for r in ra] == [r["step"] for r in rb], kind
    for x, y in zip(ra, rb):
      for key, value in x.items():
        assert y[key] == pytest.approx(value, abs=atol), (kind, key)


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
  """The reference: one host-fed step per call, synchronous saves (the CPU defaults)."""
  workdir = tmp_path_factory.mktemp("one_step") / "run"
  results = train_and_evaluate(_config(1, "host"), workdir, objective=logistic_objective(),
                               dataset=tiny_dataset())
  return workdir, results


@pytest.mark.parametrize("steps_per_dispatch,placement,mode", [
    (8, "host", "sync"), (8, "device", "async"), (1, "device", "sync"), (64, "device", "sync")])
def test_steps_per_dispatch_and_placement_give_the_one_step_run(tmp_path, one_step_run,
                                                                steps_per_dispatch, placement,
                                                                mode):
  reference_dir, reference = one_step_run
  got = train_and_evaluate(_config(steps_per_dispatch, placement, mode), tmp_path / "got",
                           objective=logistic_objective(), dataset=tiny_dataset())
  _assert_same_run(reference_dir, tmp_path / "got")
  assert got["best_step"] == reference["best_step"] and got["steps"] == reference["steps"]
  for split in ("valid", "test"):
    for key, value in reference[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_nan_guard_sees_every_step_of_a_dispatch(tmp_path):
  # The loss turns NaN from the 8th call; dispatches of 4 run steps 1-4, 5 (eval), 6-9, 10.
  config = _config(4, "device", num_train_steps=30, eval_every_steps=5, log_every_steps=10)
  config.checkpoint_every_steps = 0
  with pytest.raises(FloatingPointError, match="step 8 .*last good checkpoint is step 5"):
    train_and_evaluate(config, tmp_path, objective=logistic_objective(nan_after_calls=7),
                       dataset=tiny_dataset())
  steps, state, _ = _checkpoints(tmp_path)
  assert steps[-1] == 5 and int(state["step"]) == 5


def test_checkpoint_between_logs_is_refused_after_a_non_finite_step(tmp_path):
  # A checkpoint at step 8 (every 4) comes before the next log (10): the guard must look.
  config = _config(1, "host", num_train_steps=30, eval_every_steps=20, log_every_steps=10)
  with pytest.raises(FloatingPointError, match="step 8 .*last good checkpoint is step 4"):
    train_and_evaluate(config, tmp_path, objective=logistic_objective(nan_after_calls=7),
                       dataset=tiny_dataset())
  assert _checkpoints(tmp_path)[0][-1] == 4


def test_sigterm_finishes_the_dispatch_saves_and_resumes_exactly(tmp_path, monkeypatch):
  data = tiny_dataset()
  config = _config(8, "device", "async")
  train_and_evaluate(config, tmp_path / "full", objective=logistic_objective(), dataset=data)
  monkeypatch.setenv(preemption.SELF_SIGNAL_ENV, "SIGTERM@6")
  # Step 6 falls in the dispatch of steps 6..8 (boundaries at 5 and 8): it ends at 8.
  assert train_and_evaluate(config, tmp_path / "part", objective=logistic_objective(),
                            dataset=data) == {"interrupted_at": 8}
  assert _checkpoints(tmp_path / "part")[0][-1] == 8
  monkeypatch.delenv(preemption.SELF_SIGNAL_ENV)
  train_and_evaluate(config, tmp_path / "part", objective=logistic_objective(), dataset=data)
  _assert_same_run(tmp_path / "full", tmp_path / "part", atol=0, kinds=("eval",))


_SCRIPT = """
import sys
from hgrank_jax.train.loop import train_and_evaluate
from tests.train.helpers import logistic_objective, tiny_dataset
from tests.train.test_dispatch import _config
train_and_evaluate(_config(8, "device", "async"), sys.argv[1],
                   objective=logistic_objective(), dataset=tiny_dataset())
"""


def test_sigkill_with_dispatch_and_resident_data_resumes_exactly(tmp_path):
  data = tiny_dataset()
  train_and_evaluate(_config(8, "device", "async"), tmp_path / "full",
                     objective=logistic_objective(), dataset=data)
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env[preemption.SELF_SIGNAL_ENV] = "SIGKILL@14"
  run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "part")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
  assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
  # Killed after the dispatch of steps 13..15 started, while the asynchronous save of 12
  # (or the removal of an old checkpoint) may still be under way: the latest complete
  # checkpoint is 12, or else 10, and it restores.
  steps, state, _ = _checkpoints(tmp_path / "part")
  assert steps[-1] in (10, 12) and int(state["step"]) == steps[-1]
  resumed = train_and_evaluate(_config(8, "device", "async"), tmp_path / "part",
                               objective=logistic_objective(), dataset=data)
  assert resumed["steps"] == 23
  _assert_same_run(tmp_path / "full", tmp_path / "part", atol=0, kinds=("eval",))


def test_resident_rows_and_stacked_batches_follow_the_batcher_order():
  mesh = data_mesh()
  columns = {"x": np.arange(37, dtype=np.int32) * 3, "y": np.arange(74.0).reshape(37, 2)}
  reference = [next(b) for b in [ArrayBatcher(columns, 16, seed=5)] for _ in range(7)]
  batcher = ArrayBatcher(columns, 16, seed=5, mesh=mesh)
  resident = chunks.place_replicated(columns, mesh)
  rows, mask = chunks.next_rows(batcher, 3, mesh)
  stacked = chunks.stacked_batches(batcher, 4, mesh, 16)  # crosses the epoch end (3 steps)
  assert batcher.get_state()["epoch"] == 2 and batcher.get_state()["step_in_epoch"] == 1
  gathered = jax.jit(jax.vmap(lambda r, m: chunks.gather_rows(resident, r, m)))(rows, mask)
  for i in range(3):
    for key in ("x", "y", "mask"):
      np.testing.assert_array_equal(np.asarray(gathered[key][i]), reference[i][key])
  for i in range(4):
    for key in ("x", "y", "mask"):
      np.testing.assert_array_equal(np.asarray(stacked[key][i]), reference[3 + i][key])


class _FakeDevice:
  platform = "gpu"

  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return {"bytes_limit": self.limit}


def test_placement_fits_in_device_memory_or_says_why():
  devices = [_FakeDevice(1000), _FakeDevice(800)]
  assert chunks.choose_placement("auto", 400, devices)[0] == "device"
  placement, reason = chunks.choose_placement("auto", 401, devices)
  assert placement == "host" and "more than 50% of the" in reason
  with pytest.raises(ValueError, match="data_placement='host'.*data_source='streaming'"):
    chunks.choose_placement("device", 401, devices)
  assert chunks.choose_placement("host", 1, devices)[0] == "host"
  with pytest.raises(ValueError, match="data_placement"):
    chunks.choose_placement("gpu", 1, devices)
  with pytest.raises(ValueError, match="data_placement"):
    train_and_evaluate(_config(1, "gpu"), "/tmp/never-created-hgrank", dataset=tiny_dataset())
  with pytest.raises(ValueError, match="steps_per_dispatch"):
    train_and_evaluate(_config(-1, "host"), "/tmp/never-created-hgrank", dataset=tiny_dataset())


def test_execution_keys_are_not_part_of_a_runs_identity(tmp_path):
  from hgrank_jax.experiments.runs import config_hash  # pylint: disable=g-import-not-at-top
  from hgrank_jax.train.checkpoint import prepare_workdir  # pylint: disable=g-import-not-at-top
  one = _config(1, "host")
  other = _config(32, "device")
  assert config_hash(one) == config_hash(other)
  prepare_workdir(tmp_path, one.to_dict())
  prepare_workdir(tmp_path, other.to_dict())  # a run may resume on another backend


def test_async_skip_skips_periodic_saves_while_busy_but_never_the_interruption(
    tmp_path, monkeypatch, one_step_run):
  from hgrank_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  data = tiny_dataset()
  reference_dir, reference = one_step_run
  # The writer is always busy: every periodic save after the first is skipped.
  real_busy = ckpt_lib.Checkpointer.busy
  monkeypatch.setattr(ckpt_lib.Checkpointer, "busy",
                      lambda self: real_busy(self) or self._pending is not None)
  config = _config(8, "device", "async_skip")
  monkeypatch.setenv(preemption.SELF_SIGNAL_ENV, "SIGTERM@14")
  assert train_and_evaluate(config, tmp_path / "got", objective=logistic_objective(),
                            dataset=data) == {"interrupted_at": 15}
  assert _checkpoints(tmp_path / "got")[0] == [4, 15]  # the first save, then the stop
  monkeypatch.delenv(preemption.SELF_SIGNAL_ENV)
  got = train_and_evaluate(config, tmp_path / "got", objective=logistic_objective(), dataset=data)
  steps, state, _ = _checkpoints(tmp_path / "got")
  assert steps == [16, 23] and int(state["step"]) == 23  # resumed at 15: saved at 16, the end
  assert got["best_step"] == reference["best_step"]
  for split in ("valid", "test"):
    assert got[split] == pytest.approx(reference[split], abs=1e-6)
  _, ref_state, _ = _checkpoints(reference_dir)
  for x, y in zip(jax.tree.leaves(ref_state), jax.tree.leaves(state)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
