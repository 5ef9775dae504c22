"""Multi-process runs: when to call ``jax.distributed.initialize`` and with what.

One training job may run as several processes (one per GPU host, one per TPU VM
worker, or several on one machine). Each runs the same command; JAX's
distributed runtime connects them through a coordinator (process 0), after
which ``jax.devices()`` lists every process's devices and one ``jax.jit``
program runs over all of them (see :mod:`~hgrank_jax.parallel.sharding` and
:mod:`~hgrank_jax.train.loop`). :func:`maybe_initialize_distributed` must run
before anything touches a JAX backend; ``launch/train.py`` calls it first.

How the processes are described, in the order checked:

1. Explicit arguments (``launch.train --coordinator_address=HOST:PORT
   --num_processes=N --process_id=I``): any GPU/CPU cluster.
2. Environment: ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
   ``JAX_PROCESS_ID`` (``JAX_LOCAL_DEVICE_IDS`` optional; JAX reads it itself).
3. A scheduler JAX auto-detects, with more than one process: Slurm
   (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``,
   ``SLURM_PROCID``, ``SLURM_LOCALID``; e.g. ``srun``), Open MPI
   (``OMPI_MCA_orte_hnp_uri``, ``OMPI_COMM_WORLD_SIZE``; e.g. ``mpirun``), or a
   TPU slice on GKE (``TPU_WORKER_HOSTNAMES``/``TPU_PROCESS_ADDRESSES`` naming
   several hosts). Then ``jax.distributed.initialize()`` is called with no
   arguments and JAX fills them in.
4. ``mode="on"`` (``--distributed=on``): initialise with whatever is given and
   let JAX auto-detect the rest. Needed on a Cloud TPU VM slice created with
   ``gcloud``: JAX finds the workers through the GCE metadata server, which
   cannot be probed without a network call (``launch/run_tpu.sh`` passes it).

Otherwise (one process) nothing is initialised. ``mode="off"`` disables all
detection. On CPU the cross-process collectives use gloo (set here).
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

MODES = ("auto", "on", "off")


def _int(environ: Mapping[str, str], key: str) -> int | None:
  value = environ.get(key)
  return int(value) if value not in (None, "") else None


def detect(coordinator_address: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, *, mode: str = "auto",
           environ: Mapping[str, str] | None = None) -> tuple[str | None, dict]:
  """Decides whether and how to initialise, without initialising (pure; testable).

  Returns:
    ``(method, kwargs)``: method is None (single process), "flags", "env",
    "slurm", "ompi", "tpu" or "forced"; kwargs go to ``jax.distributed.initialize``.

  Raises:
    ValueError: an unknown mode, or explicit arguments that are incomplete or
      inconsistent (e.g. a process id without a coordinator).
  """
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise ValueError(f"distributed mode must be one of {MODES}, got {mode!r}")
  if mode == "off":
    return None, {}
  explicit = {"coordinator_address": coordinator_address or None,
              "num_processes": num_processes, "process_id": process_id}
  if any(v is not None for v in explicit.values()):
    if num_processes == 1 and mode == "auto":
      return None, {}
    missing = [k for k, v in explicit.items() if v is None]
    if missing and mode == "auto":
      raise ValueError(f"multi-process run: also give {', '.join('--' + k for k in missing)} "
                       f"(got {', '.join(f'{k}={v}' for k, v in explicit.items() if v is not None)})")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
      raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    return ("flags" if not missing else "forced"), {k: v for k, v in explicit.items()
                                                     if v is not None}
  env = {"coordinator_address": environ.get("JAX_COORDINATOR_ADDRESS") or None,
         "num_processes": _int(environ, "JAX_NUM_PROCESSES"),
         "process_id": _int(environ, "JAX_PROCESS_ID")}
  if env["coordinator_address"] and env["num_processes"] not in (None, 1):
    if env["process_id"] is None:
      raise ValueError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but JAX_PROCESS_ID "
                       "is not")
    return "env", env
  if mode == "on":
    return "forced", {k: v for k, v in env.items() if v is not None}
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(k in environ for k in slurm) and (_int(environ, "SLURM_NTASKS") or 1) > 1:
    return "slurm", {}
  if "OMPI_MCA_orte_hnp_uri" in environ and (_int(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "ompi", {}
  hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return "tpu", {}
  return None, {}


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None, *, mode: str = "auto",
                                 initialization_timeout: int | None = None,
                                 environ: Mapping[str, str] | None = None) -> str | None:
  """Calls ``jax.distributed.initialize`` when this job runs as several processes.

  Args:
    coordinator_address: ``host:port`` of process 0 (explicit runs).
    num_processes: processes in the job.
    process_id: this process, in ``[0, num_processes)``.
    mode: "auto" (see the module docstring), "on" (always initialise, JAX
      auto-detects what is not given), "off".
    initialization_timeout: seconds to wait for every process to connect
      (default ``$HGRANK_DISTRIBUTED_TIMEOUT`` or JAX's 300). A process that stops
      sending heartbeats for ``$HGRANK_DISTRIBUTED_HEARTBEAT_TIMEOUT`` seconds
      (JAX's default 100) is declared dead and the others are stopped.
    environ: the environment to inspect (default ``os.environ``).

  Returns:
    How the processes were found (see :func:`detect`), or None when single-process.
  """
  environ = os.environ if environ is None else environ
  method, kwargs = detect(coordinator_address, num_processes, process_id, mode=mode,
                          environ=environ)
  if method is None:
    return None
  if jax.distributed.is_initialized():
    return method
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms and set(platforms.split(",")) == {"cpu"}:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = initialization_timeout or _int(environ, "HGRANK_DISTRIBUTED_TIMEOUT")
  if timeout:
    kwargs["initialization_timeout"] = int(timeout)
  heartbeat = _int(environ, "HGRANK_DISTRIBUTED_HEARTBEAT_TIMEOUT")
  if heartbeat:
    kwargs["heartbeat_timeout_seconds"] = heartbeat
  jax.distributed.initialize(**kwargs)
  print(f"jax.distributed initialised ({method}): process {jax.process_index()} of "
        f"{jax.process_count()}, {jax.local_device_count()} local / {jax.device_count()} global "
        "devices.", flush=True)
  return method
