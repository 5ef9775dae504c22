"""Device meshes and shardings for data-parallel training with ``jax.jit``.

Data parallelism uses one mesh axis, ``data``: batches are split along their
leading axis over every device, parameters and other state are replicated.
It replaces the older per-device mapping API, which is in maintenance mode in
current JAX; the same code runs on 1 CPU, 8 fake CPU devices, a GPU or a TPU host.

With several processes (``jax.distributed``), the mesh spans every process's
devices; each process feeds only the rows of a global batch that its own devices
hold (:func:`local_batch_slice`, :func:`global_batch`) and host-side results
are gathered from all processes (:func:`gather_to_host`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("data_mesh: no devices given")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (batch) axis over the ``data`` axis; other axes unsplit."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (parameters, optimizer and RVQ state)."""
  return NamedSharding(mesh, PartitionSpec())


def local_batch_slice(sharding: NamedSharding, global_batch_size: int) -> slice:
  """The rows ``[start, stop)`` of a global batch that this process's devices hold.

  With one process this is the whole batch. With several, each process feeds
  only its rows (``jax.make_array_from_process_local_data``); on a mesh built
  from ``jax.devices()`` they are one contiguous range per process.
  """
  indices = sharding.addressable_devices_indices_map((global_batch_size,))
  ranges = sorted({(idx[0].start or 0, global_batch_size if idx[0].stop is None else idx[0].stop)
                   for idx in indices.values()})
  if any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
    raise ValueError("this process's devices hold a non-contiguous part of the batch; build the "
                     "mesh from jax.devices() in their default order")
  return slice(ranges[0][0], ranges[-1][1])


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding,
                 global_batch_size: int) -> dict[str, jax.Array]:
  """Assembles each process's rows (``local_batch_slice``) into global arrays."""
  if jax.process_count() == 1:
    return jax.device_put(dict(local), sharding)  # one batched transfer
  return {k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v), (global_batch_size,) + np.shape(v)[1:]) for k, v in local.items()}


def gather_to_host(x: jax.Array) -> np.ndarray:
  """The full value of a (possibly multi-process) array on every host, as numpy."""
  if jax.process_count() == 1 or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
  """Raises a clear error when the global batch does not split evenly over devices."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the number of devices "
        f"{num_devices} on mesh axis '{DATA_AXIS}'; choose a multiple of {num_devices} "
        f"(e.g. {((global_batch_size + num_devices - 1) // num_devices) * num_devices}).")


def enable_compilation_cache(directory: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache (launchers call this).

  Runs of a table differ in seeds and data order, not in their programs, so
  after the first run compilation is read from disk (a runlocal GroupCE run went
  from 16 s to 2 s here). Uses ``$JAX_COMPILATION_CACHE_DIR`` when set, else
  ``directory``, else ``~/.cache/hgrank_jax/jax``. Returns the directory used.
  """
  import os  # pylint: disable=g-import-not-at-top
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or directory or os.path.join(
      os.path.expanduser("~"), ".cache", "hgrank_jax", "jax")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return path
