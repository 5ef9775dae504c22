"""Several training steps' batches per dispatch, from the host or from a split on the devices.

On an accelerator a small train step takes a fraction of a millisecond, less
than gathering its batch with numpy and transferring it, so the train loop runs
``n`` steps per jitted call (:func:`hgrank_jax.train.steps.make_multi_step`) and
feeds them here in one piece. Two ways:

* host: :func:`stacked_batches` gathers ``n`` batches of an :class:`ArrayBatcher`
  (or any iterator of placed batches) and hands them over stacked ``[n, B, ...]``;
* device-resident: a split that fits in device memory is copied onto every device
  once (:func:`place_replicated`); each dispatch then transfers only the row
  indices ``[n, B]`` of its steps (:func:`next_rows`, 4 bytes a row) and the
  rows are gathered on the device (:func:`gather_rows`).

Both walk the batcher's own order (epoch ``e`` is the permutation of
``numpy.random.default_rng([seed, e])``), so a run sees the same batches
whichever way it is fed, and the batcher's position is what a checkpoint saves.
:func:`choose_placement` decides, before anything is compiled, whether a split
goes onto the devices: it must fit in a fixed share of device memory.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hgrank_jax.data.inmemory import MASK, ArrayBatcher
from hgrank_jax.parallel.sharding import DATA_AXIS, replicated_sharding

PLACEMENTS = ("auto", "device", "host")
# Share of the smallest device memory the resident splits may take: the model,
# optimizer state, activations and XLA's scratch space need the rest.
DEVICE_DATA_FRACTION = 0.5


def stacked_sharding(mesh: Mesh) -> NamedSharding:
  """``[n, B, ...]``: the step axis unsplit, the rows of each step split over ``data``."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def columns_nbytes(columns: Mapping[str, np.ndarray]) -> int:
  """Bytes the columns take on a device (int64/float64 arrive as 32-bit without x64).

  >>> columns_nbytes({"a": np.zeros(10, np.int64), "b": np.zeros((10, 2), np.float32)})
  120
  """
  total = 0
  for values in columns.values():
    values = np.asarray(values)
    itemsize = min(values.dtype.itemsize, 4) if not jax.config.jax_enable_x64 else (
        values.dtype.itemsize)
    total += int(values.size) * itemsize
  return total


def device_memory_bytes(devices: Sequence[jax.Device]) -> int | None:
  """The smallest memory limit of ``devices`` in bytes, or None when a backend does not say
  (the CPU backend: its "device memory" is the host's)."""
  limits = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if not stats or "bytes_limit" not in stats:
      return None
    limits.append(int(stats["bytes_limit"]))
  return min(limits) if limits else None


def choose_placement(requested: str, nbytes: int, devices: Sequence[jax.Device], *,
                     fraction: float = DEVICE_DATA_FRACTION) -> tuple[str, str]:
  """``("device" | "host", reason)`` for splits of ``nbytes`` on ``devices``.

  ``requested``: "device" (resident; refused when it does not fit), "host"
  (numpy batches, as on CPU), or "auto": resident on an accelerator when
  ``nbytes <= fraction * device memory``, host batches otherwise and on CPU
  (where both are in host memory and host batches need no copy per device).

  Raises:
    ValueError: ``requested`` is unknown, or "device" and the splits do not fit;
      the message names the sizes and the alternatives.

  >>> cpu = jax.devices("cpu")[:1]
  >>> choose_placement("auto", 10, cpu)[0], choose_placement("device", 10, cpu)[0]
  ('host', 'device')
  """
  if requested not in PLACEMENTS:
    raise ValueError(f"config.data_placement must be one of {PLACEMENTS}, got {requested!r}")
  if requested == "host":
    return "host", "config.data_placement='host'"
  limit = device_memory_bytes(devices)
  size = f"{nbytes / 2**20:,.1f} MiB"
  if limit is not None and nbytes > fraction * limit:
    why = (f"the splits take {size}, more than {fraction:.0%} of the "
           f"{limit / 2**30:,.1f} GiB of device memory")
    if requested == "device":
      raise ValueError(f"config.data_placement='device' but {why}; use data_placement='host' "
                       "(batches gathered on the host) or data_source='streaming' (array_record "
                       "blocks, for splits larger than host memory)")
    return "host", f"{why}: batches are gathered on the host"
  if requested == "auto" and devices[0].platform == "cpu":
    return "host", "CPU devices: batches gathered on the host"
  return "device", f"the splits ({size}) are resident on {len(devices)} device(s)"


def place_replicated(columns: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Every column copied onto every device of ``mesh`` (works with several processes:
  each copies the same host columns onto its own devices)."""
  sharding = replicated_sharding(mesh)
  out = {}
  for name, values in columns.items():
    values = np.asarray(values)
    if not jax.config.jax_enable_x64 and values.dtype.itemsize == 8:
      values = values.astype(np.int32 if values.dtype.kind in "iu" else np.float32)
    out[name] = jax.make_array_from_callback(values.shape, sharding, lambda idx, v=values: v[idx])
  return out


def gather_rows(columns: Mapping[str, jax.Array], rows: jax.Array, mask: jax.Array,
                sharding: NamedSharding | None = None) -> dict[str, jax.Array]:
  """One batch from a resident split: ``{c: columns[c][rows]} | {"mask": mask}``.

  Call under jit. ``rows`` int ``[B]`` indexes the leading axis of every column;
  ``sharding`` (the batch sharding) pins the rows' split over the devices.

  >>> b = gather_rows({"x": jnp.arange(10) * 2}, jnp.array([3, 0]), jnp.array([True, False]))
  >>> b["x"].tolist(), b["mask"].tolist()
  ([6, 0], [True, False])
  """
  batch = {name: jnp.take(values, rows, axis=0) for name, values in columns.items()}
  batch[MASK] = mask
  if sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: sharding, batch))
  return batch


def _place_stacked(local: Mapping[str, np.ndarray], mesh: Mesh,
                   global_batch_size: int) -> dict[str, jax.Array]:
  sharding = stacked_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(dict(local), sharding)
  return {k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v), (v.shape[0], global_batch_size) + np.shape(v)[2:])
          for k, v in local.items()}


def next_rows(batcher: ArrayBatcher, n: int, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
  """The next ``n`` steps' row indices (int32 ``[n, B]``) and masks (bool ``[n, B]``) of
  ``batcher``, placed on ``mesh`` like stacked batches; advances the batcher ``n`` steps."""
  pairs = [batcher.next_indices() for _ in range(n)]
  local = {"rows": np.stack([r for r, _ in pairs]).astype(np.int32),
           "mask": np.stack([m for _, m in pairs])}
  placed = _place_stacked(local, mesh, batcher.global_batch_size)
  return placed["rows"], placed["mask"]


def stacked_batches(source: Iterator[dict[str, Any]], n: int, mesh: Mesh,
                    global_batch_size: int) -> dict[str, jax.Array]:
  """The next ``n`` batches of ``source`` stacked ``[n, B, ...]`` on ``mesh``.

  An :class:`ArrayBatcher` gathers the rows with numpy and transfers them at
  once; any other iterator of placed batches (the streaming batcher) is
  stacked on the devices.
  """
  if isinstance(source, ArrayBatcher):
    pairs = [source.next_indices() for _ in range(n)]
    rows = np.stack([r for r, _ in pairs])
    local = {name: values[rows] for name, values in source.columns.items()}
    local[MASK] = np.stack([m for _, m in pairs])
    return _place_stacked(local, mesh, global_batch_size)
  batches = [next(source) for _ in range(n)]
  return _stack_on_device(batches, stacked_sharding(mesh))


def _stack_on_device(batches, sharding):
  return _stacker(sharding)(batches)


@functools.cache
def _stacker(sharding):
  return jax.jit(lambda bs: jax.tree.map(lambda *xs: jnp.stack(xs), *bs), out_shardings=sharding)
