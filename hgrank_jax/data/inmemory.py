"""Batches from in-memory numpy columns: seeded, resumable, padded, device-sharded.

For data that fits in memory (the bundled KuaiRand subset, MovieLens, fixtures,
simulator runs up to a few million rows), reading records one at a time through
TFDS/grain is far slower than a train step, so batches are gathered from numpy
arrays with one fancy-index per column. :class:`ArrayBatcher` walks a fresh
seeded permutation each epoch (or the natural order for evaluation), pads the
last batch of an epoch with masked rows so every step has the same shape and no
row is dropped or repeated, and can save and restore its position exactly.
With a mesh, each batch is placed as a global array split over the ``data``
axis; in a multi-process run (``jax.distributed``) every process walks the same
global permutation but gathers and transfers only the rows its own devices hold,
so the global batches are those of a single-process run.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from hgrank_jax.parallel.sharding import (batch_sharding, check_batch_divisible, global_batch,
                                       local_batch_slice)

MASK = "mask"


class ArrayBatcher:
  """Iterates fixed-size batches over equally long columns.

  Each batch is a dict of the columns (``[global_batch_size, ...]``, as numpy, or
  as global jax arrays sharded over the mesh's ``data`` axis when a mesh is
  given) plus ``"mask"`` (bool ``[global_batch_size]``), False on padding rows.
  One epoch is ``ceil(n / global_batch_size)`` steps and visits every row exactly
  once. The training order of epoch ``e`` is the permutation drawn from
  ``numpy.random.default_rng([seed, e])``, so it does not depend on how the run
  was interrupted.

  Args:
    columns: column name -> array ``[n, ...]``; all the same length n >= 1.
    global_batch_size: rows per step over all devices.
    shuffle: draw a new permutation each epoch (training) or keep row order.
    seed: permutation seed.
    num_epochs: stop after this many epochs; None repeats forever.
    mesh: place batches on this mesh, split along ``data``; None yields numpy.

  >>> b = ArrayBatcher({"x": np.arange(5)}, 2, shuffle=False, num_epochs=1)
  >>> [(batch["x"].tolist(), batch["mask"].tolist()) for batch in b]
  [([0, 1], [True, True]), ([2, 3], [True, True]), ([4, 0], [True, False])]
  """

  def __init__(self, columns: Mapping[str, np.ndarray], global_batch_size: int, *,
               shuffle: bool = True, seed: int = 0, num_epochs: int | None = None,
               mesh: Mesh | None = None):
    if not columns:
      raise ValueError("ArrayBatcher: no columns given")
    if MASK in columns:
      raise ValueError(f"ArrayBatcher: column name {MASK!r} is reserved for the padding mask")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArrayBatcher: columns differ in length: {lengths}")
    if global_batch_size < 1:
      raise ValueError(f"ArrayBatcher: global_batch_size must be >= 1, got {global_batch_size}")
    if num_epochs is not None and num_epochs < 1:
      raise ValueError(f"ArrayBatcher: num_epochs must be >= 1 or None, got {num_epochs}")
    self.num_rows = next(iter(lengths.values()))
    if self.num_rows == 0:
      raise ValueError("ArrayBatcher: the columns are empty")
    if mesh is not None:
      check_batch_divisible(global_batch_size, mesh)
    self.columns = {name: np.asarray(values) for name, values in columns.items()}
    self.global_batch_size = int(global_batch_size)
    self.shuffle = shuffle
    self.seed = int(seed)
    self.num_epochs = num_epochs
    self.sharding = batch_sharding(mesh) if mesh is not None else None
    self._local = None
    if self.sharding is not None and jax.process_count() > 1:
      self._local = local_batch_slice(self.sharding, self.global_batch_size)
    self.steps_per_epoch = -(-self.num_rows // self.global_batch_size)
    self._epoch = 0
    self._step_in_epoch = 0
    self._order_epoch = -1
    self._order = None

  # -- state ------------------------------------------------------------------
  def get_state(self) -> dict[str, int]:
    """Position to save with a checkpoint (plain ints; JSON-serialisable)."""
    return {"epoch": self._epoch, "step_in_epoch": self._step_in_epoch, "seed": self.seed,
            "num_rows": self.num_rows, "global_batch_size": self.global_batch_size}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues exactly where :meth:`get_state` was taken.

    Raises:
      ValueError: when the state was saved for different data, batch size or seed.
    """
    for key in ("seed", "num_rows", "global_batch_size"):
      if int(state[key]) != getattr(self, key):
        raise ValueError(f"ArrayBatcher state was saved with {key}={state[key]}, "
                         f"but this batcher has {key}={getattr(self, key)}")
    epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
    if epoch < 0 or not 0 <= step < self.steps_per_epoch:
      raise ValueError(f"ArrayBatcher state out of range: epoch={epoch}, step_in_epoch={step}")
    self._epoch, self._step_in_epoch = epoch, step

  @property
  def exhausted(self) -> bool:
    return self.num_epochs is not None and self._epoch >= self.num_epochs

  # -- iteration ----------------------------------------------------------------
  def _epoch_order(self, epoch: int) -> np.ndarray:
    if self._order_epoch != epoch:
      if self.shuffle:
        self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
      else:
        self._order = np.arange(self.num_rows)
      self._order_epoch = epoch
    return self._order

  def batch_indices(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``[global_batch_size]`` and validity mask of one step."""
    order = self._epoch_order(epoch)
    start = step * self.global_batch_size
    rows = order[start:start + self.global_batch_size]
    valid = np.ones(self.global_batch_size, bool)
    if len(rows) < self.global_batch_size:
      valid[len(rows):] = False
      # Padding repeats row order[0] with mask False, so values stay in range.
      rows = np.concatenate([rows, np.full(self.global_batch_size - len(rows), order[0])])
    return rows, valid

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def next_indices(self) -> tuple[np.ndarray, np.ndarray]:
    """The next step's row indices and mask (this process's rows), advancing the position.

    What :meth:`__next__` gathers; a split resident on the devices gathers these
    rows there instead (:mod:`hgrank_jax.data.chunks`), in the same order.
    """
    if self.exhausted:
      raise StopIteration
    rows, valid = self.batch_indices(self._epoch, self._step_in_epoch)
    if self._local is not None:  # several processes: gather only this process's rows
      rows, valid = rows[self._local], valid[self._local]
    self._step_in_epoch += 1
    if self._step_in_epoch == self.steps_per_epoch:
      self._epoch, self._step_in_epoch = self._epoch + 1, 0
    return rows, valid

  def __next__(self) -> dict[str, Any]:
    rows, valid = self.next_indices()
    batch = {name: values[rows] for name, values in self.columns.items()}
    batch[MASK] = valid
    if self.sharding is not None:
      batch = global_batch(batch, self.sharding, self.global_batch_size)
    return batch


def eval_batches(columns: Mapping[str, np.ndarray], global_batch_size: int, *,
                 mesh: Mesh | None = None) -> ArrayBatcher:
  """One ordered pass over ``columns`` with a padded, masked last batch."""
  return ArrayBatcher(columns, global_batch_size, shuffle=False, num_epochs=1, mesh=mesh)
