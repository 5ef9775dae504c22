"""Two processes on this machine (CPU, gloo, localhost coordinator) train as one job.

Each process has 4 CPU devices (8 global, like the single-process reference),
feeds its half of every global batch, and they checkpoint together. SIGTERM to
one process stops both after the same step with a checkpoint; a process killed
mid-run takes the job down within a bounded time; rerunning both resumes from the
last collective checkpoint, and the final metrics and parameters equal a
single-process run over the same global batches.
"""

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hgrank_jax.parallel import distributed
from hgrank_jax.train.loop import train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "simulator.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_job(workdir, tag, *, extra_env=None, deadline_s=240, grace_s=20):
  """Runs the 2-process job; returns [(returncode, output)]. Never outlives its deadline.

  When one process fails, the survivor gets ``grace_s`` to stop by itself (JAX's
  distributed runtime notices a dead peer), then it is killed (SIGKILL).
  """
  port = _free_port()
  procs, logs = [], []
  for i in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HGRANK_DISTRIBUTED_TIMEOUT="60",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HGRANK_SELF_SIGNAL", None)
    env.update((extra_env or {}).get(i, {}))
    log = open(pathlib.Path(workdir).parent / f"{tag}_p{i}.log", "w+")
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "launch.train", f"--config={CONFIG}:runlocal",
         f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  start, failed_at = time.monotonic(), None
  try:
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
        failed_at = now
      if now - start > deadline_s or (failed_at is not None and now - failed_at > grace_s):
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait(timeout=30)
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  return [(p.returncode, out) for p, out in zip(procs, outputs)]


def _checkpoint(workdir, like=None):
  """(step, state, loop) of the latest checkpoint; ``like``: a state whose layout to use
  (a checkpoint written by 2 processes is restored here into this process's devices)."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  step = manager.latest_step()
  target = None if like is None else jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), loop=ocp.args.JsonRestore()))
  manager.close()
  return step, restored["state"], dict(restored["loop"])


def _single_process_reference(workdir):
  spec = importlib.util.spec_from_file_location("simulator_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert jax.device_count() == 8
  return train_and_evaluate(module.get_config("runlocal"), workdir)


def test_detect_reads_flags_env_and_schedulers():
  assert distributed.detect(environ={}) == (None, {})
  assert distributed.detect("h:1", 2, 1, environ={}) == (
      "flags", {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1})
  assert distributed.detect("h:1", 1, 0, environ={}) == (None, {})
  with pytest.raises(ValueError, match="--process_id"):
    distributed.detect("h:1", 2, None, environ={})
  with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
    distributed.detect("h:1", 2, 2, environ={})
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert distributed.detect(environ=env) == (
      "env", {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3})
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  assert distributed.detect(environ=slurm) == ("slurm", {})
  assert distributed.detect(environ=dict(slurm, SLURM_NTASKS="1")) == (None, {})
  assert distributed.detect(environ={"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}) == ("tpu", {})
  assert distributed.detect(environ={"TPU_WORKER_HOSTNAMES": "localhost"}) == (None, {})
  assert distributed.detect(mode="on", environ={}) == ("forced", {})
  assert distributed.detect("h:1", 2, 0, mode="off", environ=env) == (None, {})
  # A single process needs no initialisation: nothing is called.
  assert distributed.maybe_initialize_distributed(environ={}) is None


@pytest.mark.slow
def test_two_processes_equal_one_process_and_survive_a_killed_peer(tmp_path):
  reference = _single_process_reference(tmp_path / "single")
  _, a, loop_a = _checkpoint(tmp_path / "single")
  workdir = tmp_path / "job"
  # SIGTERM reaches process 1 only, after step 7: both processes stop after step 7
  # with one collective checkpoint and exit 0.
  first = _run_job(workdir, "sigterm", extra_env={1: {"HGRANK_SELF_SIGNAL": "SIGTERM@7"}})
  for code, output in first:
    assert code == 0, output[-3000:]
  assert "Interrupted by another process at step 7" in first[0][1]
  assert "Interrupted by SIGTERM at step 7" in first[1][1]
  assert _checkpoint(workdir, like=a)[0] == 7
  # Process 1 is killed after step 14 (the checkpoint of step 10 exists). JAX's
  # distributed runtime notices the missing heartbeats and stops process 0 by
  # itself (the harness would kill it after 45 s), and nothing of step 14 is saved.
  heartbeat = {"HGRANK_DISTRIBUTED_HEARTBEAT_TIMEOUT": "15"}
  second = _run_job(workdir, "sigkill", grace_s=45, extra_env={
      0: heartbeat, 1: dict(heartbeat, HGRANK_SELF_SIGNAL="SIGKILL@14")})
  assert second[1][0] == -signal.SIGKILL, second[1][1][-3000:]
  assert second[0][0] not in (0, -signal.SIGKILL), second[0][1][-3000:]  # stopped by itself
  assert "stopped sending heartbeats" in second[0][1]
  assert "from step 7" in second[0][1]
  assert not (workdir / "results.json").exists()
  step, state, _ = _checkpoint(workdir, like=a)
  assert step == 10 and int(state["step"]) == 10
  third = _run_job(workdir, "resume")
  for code, output in third:
    assert code == 0, output[-3000:]
  assert "process 0 of 2" in third[0][1] and "process 1 of 2" in third[1][1]
  assert "Resumed" in third[0][1] and "from step 10" in third[0][1]
  assert "Best step" not in third[1][1]  # only process 0 reports

  got = json.loads((workdir / "results.json").read_text())
  assert got["steps"] == reference["steps"] and got["best_step"] == reference["best_step"]
  for split in ("valid", "test"):
    for key, value in reference[split].items():
      assert got[split][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, key)
  _, b, loop_b = _checkpoint(workdir, like=a)
  assert loop_a == loop_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # metrics.jsonl is written once (by process 0): one eval record per evaluation.
  evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
           if '"eval"' in line]
  assert [r["step"] for r in evals] == [10, 20]
