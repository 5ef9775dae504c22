"""Preemption: SIGTERM/SIGINT checkpoint and exit cleanly, SIGKILL resumes from the last
checkpoint, and every interrupted-then-resumed run ends equal to an uninterrupted one.

The signals are sent by the process to itself after fixed steps
(``$HGRANK_SELF_SIGNAL``), so the tests are deterministic.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hgrank_jax.train import preemption
from hgrank_jax.train.loop import train_and_evaluate
from hgrank_jax.train.writers import read_metrics
from tests.train.helpers import logistic_objective, loop_config, tiny_dataset

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _checkpoint(workdir):
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  return step, restored["state"], dict(restored["loop"])


def _strip(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_parse_self_signals():
  assert preemption.parse_self_signals("SIGTERM@3, SIGKILL@12") == {
      3: signal.SIGTERM, 12: signal.SIGKILL}
  assert preemption.parse_self_signals("") == {}
  for bad in ("SIGTERM", "SIGTERM@x", "SIGFOO@3"):
    with pytest.raises(ValueError, match="SIGTERM@7"):
      preemption.parse_self_signals(bad)


def test_guard_records_signal_and_restores_previous_handlers():
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda *a: seen.append("outer"))
  try:
    before_int = signal.getsignal(signal.SIGINT)
    with preemption.PreemptionGuard() as guard:
      assert guard.active
      os.kill(os.getpid(), signal.SIGTERM)
      assert guard.requested == "SIGTERM"
      os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM changes nothing
      assert guard.requested == "SIGTERM"
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while stopping: stop at once
    assert seen == []  # the outer handler never ran while the guard was active
    assert signal.getsignal(signal.SIGINT) is before_int
    os.kill(os.getpid(), signal.SIGTERM)
    assert seen == ["outer"]  # and it is back afterwards
  finally:
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_in_process_checkpoints_and_resume_equals_uninterrupted(tmp_path, monkeypatch,
                                                                      signame):
  data = tiny_dataset()
  config = loop_config(num_train_steps=30, eval_every_steps=10, log_every_steps=5)
  config.checkpoint_every_steps = 4
  full = train_and_evaluate(config, tmp_path / "full", objective=logistic_objective(),
                            dataset=data)
  handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  part = tmp_path / "part"
  monkeypatch.setenv(preemption.SELF_SIGNAL_ENV, f"{signame}@7")
  assert train_and_evaluate(config, part, objective=logistic_objective(),
                            dataset=data) == {"interrupted_at": 7}
  assert {s: signal.getsignal(s) for s in handlers} == handlers  # nothing left installed
  step, state, loop = _checkpoint(part)
  assert step == 7 and int(state["step"]) == 7
  assert loop["data"]["step_in_epoch"] == 7 % -(-len(data.split("train")["label"]) // 64)
  monkeypatch.delenv(preemption.SELF_SIGNAL_ENV)
  resumed = train_and_evaluate(config, part, objective=logistic_objective(), dataset=data)
  assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]
  _, a, loop_a = _checkpoint(tmp_path / "full")
  _, b, loop_b = _checkpoint(part)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert loop_a == loop_b
  assert _strip(read_metrics(part, "eval")) == _strip(read_metrics(tmp_path / "full", "eval"))


def test_checkpoint_every_steps_and_max_checkpoints(tmp_path):
  config = loop_config(num_train_steps=13, eval_every_steps=10, log_every_steps=5,
                       max_checkpoints=3)
  config.checkpoint_every_steps = 3
  train_and_evaluate(config, tmp_path, objective=logistic_objective(), dataset=tiny_dataset())
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  # Saved at 3, 6, 9, 10 (evaluation), 12, 13 (end); the newest three are kept.
  assert sorted(manager.all_steps()) == [10, 12, 13]
  manager.close()


_CONFIG = """
import importlib.util
_spec = importlib.util.spec_from_file_location("simulator_config", {path!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)


def get_config(arg=None):
  config = _module.get_config(arg)
  config.checkpoint_every_steps = 4   # besides every evaluation (every 10 steps)
  return config
"""


def _launch(config_file, workdir, self_signal=None, timeout=240):
  env = dict(os.environ)
  env.pop(preemption.SELF_SIGNAL_ENV, None)
  if self_signal:
    env[preemption.SELF_SIGNAL_ENV] = self_signal
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run(
      [sys.executable, "-m", "launch.train", f"--config={config_file}:runlocal",
       f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=timeout)


@pytest.mark.slow
def test_launcher_sigterm_sigkill_resume_matches_uninterrupted(tmp_path):
  """python -m launch.train on the simulator runlocal config (20 steps, eval every 10)."""
  config_file = tmp_path / "simulator_ckpt.py"
  config_file.write_text(_CONFIG.format(path=str(ROOT / "configs" / "simulator.py")))
  full = _launch(config_file, tmp_path / "full")
  assert full.returncode == 0, full.stderr[-3000:]

  part = tmp_path / "part"
  run = _launch(config_file, part, "SIGTERM@3")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Interrupted by SIGTERM at step 3" in run.stdout
  assert _checkpoint(part)[0] == 3
  # SIGKILL after step 14: the checkpoints of steps 12 (every 4) and 10 (eval) exist, 14 not.
  run = _launch(config_file, part, "SIGKILL@14")
  assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
  assert "Resumed" in run.stdout and "from step 3" in run.stdout
  assert _checkpoint(part)[0] == 12
  run = _launch(config_file, part, "SIGTERM@17")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "from step 12" in run.stdout and "Interrupted by SIGTERM at step 17" in run.stdout
  run = _launch(config_file, part)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "from step 17" in run.stdout

  expected = json.loads((tmp_path / "full" / "results.json").read_text())
  got = json.loads((part / "results.json").read_text())
  assert got["steps"] == expected["steps"] == 20 and got["best_step"] == expected["best_step"]
  for split in ("valid", "test"):
    for key, value in expected[split].items():
      assert got[split][key] == pytest.approx(value, abs=1e-6), (split, key)
  _, a, loop_a = _checkpoint(tmp_path / "full")
  _, b, loop_b = _checkpoint(part)
  assert loop_a == loop_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
  full_evals = _strip(read_metrics(tmp_path / "full", "eval"))
  part_evals = _strip(read_metrics(part, "eval"))
  assert [r["step"] for r in part_evals] == [r["step"] for r in full_evals] == [10, 20]
  for r, s in zip(part_evals, full_evals):
    for key, value in s.items():
      assert r[key] == pytest.approx(value, abs=1e-6), key
