"""Streaming batches over TFDS array_record blocks with grain: the out-of-memory path.

Produces the same batches as :class:`~hgrank_jax.data.inmemory.ArrayBatcher`
(a dict of columns ``[global_batch, ...]`` plus bool ``"mask"``, padded last
steps, ``get_state``/``set_state``, global arrays on a ``data`` mesh) for data
that does not fit in memory, reading only one process's share of the records.

* Records are blocks of whole users (:mod:`~hgrank_jax.data.official.tfds_builders`), so
  a read returns >= 1024 rows. The blocks of a split are divided into one
  contiguous range per process (grain's ``ShardOptions`` rule: the remainder goes
  to the first shards); each process yields ``global_batch / process_count``
  units per step and the steps per epoch are the same on every process (the
  one with fewer units pads with masked ones). Padding units hold zeros (every
  categorical id 0 is in range); ArrayBatcher repeats a real row instead, so
  compare batches on ``mask`` only.
* Shuffling (training): epoch ``e`` of process ``p`` permutes its blocks with
  ``default_rng([seed, e, p])``, groups them into windows of ``window_blocks``
  blocks and permutes the units inside window ``w`` with
  ``default_rng([seed, e, p, w])``. Every unit is yielded exactly once per epoch,
  and any step can be recomputed from (epoch, step), which is all the state.
  This is a windowed shuffle, not a global permutation of rows.
* Units are rows (pointwise batches) or, with ``list_size=L``, per-user lists:
  each user's rows (in time order) split into lists of at most L rows, padded,
  with a ``"where"`` mask ``[batch, L]``; ``"mask"`` ``[batch]`` marks real lists.
* grain's ``MapDataset(...).to_iter_dataset(ReadOptions)`` reads the next
  windows in background threads while the current one is batched.
* Block datasets written at scale (:mod:`hgrank_jax.data.formats.block_dataset`) stream
  through the same :class:`StreamingBatcher`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from hgrank_jax.data.inmemory import MASK
from hgrank_jax.parallel.sharding import batch_sharding, check_batch_divisible

WHERE = "where"
_BLOCK_INDEX = "block_index"


def shard_range(num_items: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
  """The contiguous ``[start, end)`` of ``num_items`` that ``shard`` reads.

  The same rule as grain's even split without dropping: the first
  ``num_items % shard_count`` shards get one extra item.
  """
  base, extra = divmod(num_items, shard.shard_count)
  start = base * shard.shard_index + min(shard.shard_index, extra)
  return start, start + base + (shard.shard_index < extra)


def group_into_lists(columns: Mapping[str, np.ndarray], group_sizes: Sequence[int],
                     list_size: int) -> dict[str, np.ndarray]:
  """Packs consecutive groups of rows into padded lists.

  Args:
    columns: column -> ``[n, ...]``, rows of each group consecutive.
    group_sizes: rows of each group in order; sums to n.
    list_size: L, the most rows per list; a longer group fills several lists
      (its first L rows, the next L, ...).

  Returns:
    column -> ``[num_lists, L, ...]`` (padding slots hold zeros) plus ``"where"``
    (bool ``[num_lists, L]``).
  """
  sizes = np.asarray(group_sizes, np.int64)
  n = int(sizes.sum())
  lists_per_group = -(-sizes // list_size)
  first_list = np.concatenate([[0], np.cumsum(lists_per_group)[:-1]])
  group_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  group_of_row = np.repeat(np.arange(len(sizes)), sizes)
  position = np.arange(n) - group_start[group_of_row]
  list_index = first_list[group_of_row] + position // list_size
  slot = position % list_size
  num_lists = int(lists_per_group.sum())
  out = {}
  for name, values in columns.items():
    packed = np.zeros((num_lists, list_size) + values.shape[1:], values.dtype)
    packed[list_index, slot] = values
    out[name] = packed
  where = np.zeros((num_lists, list_size), bool)
  where[list_index, slot] = True
  out[WHERE] = where
  return out


def lists_from_rows(columns: Mapping[str, np.ndarray], group_field: str, list_size: int, *,
                    order_field: str | None = None) -> dict[str, np.ndarray]:
  """In-memory lists: rows grouped by ``group_field`` (ordered by ``order_field``).

  The result can be batched with :class:`~hgrank_jax.data.inmemory.ArrayBatcher`
  like any columns; see :func:`group_into_lists` for shapes.
  """
  groups = np.asarray(columns[group_field])
  within = np.arange(len(groups)) if order_field is None else np.asarray(columns[order_field])
  order = np.lexsort((np.arange(len(groups)), within, groups))
  _, sizes = np.unique(groups[order], return_counts=True)
  return group_into_lists({k: np.asarray(v)[order] for k, v in columns.items()}, sizes, list_size)


class BlockSource:
  """Random access to the blocks of one split, with their row and group counts.

  Args:
    blocks: a sequence of block records (dict column -> ``[rows, ...]``), e.g. a
      TFDS ``ArrayRecordDataSource``.
    rows_per_block: rows of each block.
    group_sizes: per block, the sizes of its consecutive user groups (needed for
      list batches).
    columns: keep only these columns (None: all but the block index).
  """

  def __init__(self, blocks: Sequence[Mapping[str, np.ndarray]], rows_per_block: Sequence[int],
               group_sizes: Sequence[Sequence[int]] | None = None,
               columns: Sequence[str] | None = None):
    if len(blocks) != len(rows_per_block):
      raise ValueError(f"BlockSource: {len(blocks)} blocks but {len(rows_per_block)} row counts")
    self.blocks = blocks
    self.rows_per_block = np.asarray(rows_per_block, np.int64)
    self.group_sizes = None if group_sizes is None else [list(g) for g in group_sizes]
    self.columns = None if columns is None else tuple(columns)

  @classmethod
  def from_tfds(cls, builder, split: str, columns: Sequence[str] | None = None) -> "BlockSource":
    """The blocks of ``split`` of a dataset prepared by :func:`tfds_builders.prepare`."""
    layout = builder.info.metadata["splits"][split]
    return cls(builder.as_data_source()[split], layout["rows_per_block"], layout["group_sizes"],
               columns)

  def __len__(self) -> int:
    return len(self.blocks)

  def read(self, index: int) -> dict[str, np.ndarray]:
    """Block ``index`` as numpy columns ``[rows, ...]``."""
    record = self.blocks[int(index)]
    names = self.columns if self.columns is not None else [k for k in record if k != _BLOCK_INDEX]
    block = {name: np.asarray(record[name]) for name in names}
    rows = len(next(iter(block.values())))
    if rows != self.rows_per_block[index]:
      raise ValueError(f"block {index} holds {rows} rows, its metadata says "
                       f"{self.rows_per_block[index]}: the prepared data is inconsistent")
    return block

  def units_per_block(self, list_size: int | None) -> np.ndarray:
    """Rows of each block, or with ``list_size`` the lists each block makes."""
    if list_size is None:
      return self.rows_per_block
    if self.group_sizes is None:
      raise ValueError("list batches need the group sizes of every block")
    return np.asarray([int(np.sum(-(-np.asarray(g, np.int64) // list_size)))
                       for g in self.group_sizes], np.int64)


class StreamingBatcher:
  """Seeded, resumable, padded batches streamed from a :class:`BlockSource`.

  Args:
    source: the split's blocks.
    global_batch_size: units (rows, or lists with ``list_size``) per step over
      all processes and devices.
    shuffle: permute blocks and units within windows per epoch (training), or
      keep the stored order (evaluation).
    seed: shuffle seed.
    num_epochs: stop after this many epochs; None repeats forever.
    mesh: place batches as global arrays split over the ``data`` axis.
    shard: this process's share (grain ``ShardOptions``); default
      ``ShardByJaxProcess()``.
    window_blocks: blocks whose units are shuffled together.
    list_size: None for row batches; L for per-user lists of at most L rows.
    read_threads: grain threads reading upcoming windows.
  """

  def __init__(self, source: BlockSource, global_batch_size: int, *, shuffle: bool = True,
               seed: int = 0, num_epochs: int | None = None, mesh: Mesh | None = None,
               shard: grain.sharding.ShardOptions | None = None, window_blocks: int = 8,
               list_size: int | None = None, read_threads: int = 2):
    shard = shard if shard is not None else grain.sharding.ShardByJaxProcess()
    if global_batch_size < 1 or global_batch_size % shard.shard_count:
      raise ValueError(f"StreamingBatcher: global_batch_size {global_batch_size} must be a "
                       f"positive multiple of the process count {shard.shard_count}")
    if num_epochs is not None and num_epochs < 1:
      raise ValueError(f"StreamingBatcher: num_epochs must be >= 1 or None, got {num_epochs}")
    if window_blocks < 1 or (list_size is not None and list_size < 1):
      raise ValueError("StreamingBatcher: window_blocks and list_size must be >= 1")
    if len(source) == 0:
      raise ValueError("StreamingBatcher: the source has no blocks")
    if mesh is not None:
      check_batch_divisible(global_batch_size, mesh)
    self.source = source
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // shard.shard_count
    self.shuffle, self.seed, self.num_epochs = shuffle, int(seed), num_epochs
    self.shard, self.window_blocks, self.list_size = shard, int(window_blocks), list_size
    self.read_threads = int(read_threads)
    self.sharding = batch_sharding(mesh) if mesh is not None else None
    units = source.units_per_block(list_size)
    self.num_rows = int(units.sum())  # units over all processes (rows or lists)
    ranges = [shard_range(len(source), grain.sharding.ShardOptions(i, shard.shard_count))
              for i in range(shard.shard_count)]
    most_units = max(int(units[a:b].sum()) for a, b in ranges)
    self.steps_per_epoch = max(1, -(-most_units // self.local_batch_size))
    start, end = ranges[shard.shard_index]
    self._my_blocks = np.arange(start, end)
    self._units = units
    self._template = None
    self._epoch = self._step_in_epoch = 0
    self._stream = None

  # -- state ------------------------------------------------------------------
  def get_state(self) -> dict[str, int]:
    """Position to save with a checkpoint (plain ints; JSON-serialisable)."""
    return {"epoch": self._epoch, "step_in_epoch": self._step_in_epoch, "seed": self.seed,
            "num_rows": self.num_rows, "global_batch_size": self.global_batch_size,
            "process_index": self.shard.shard_index, "process_count": self.shard.shard_count,
            "window_blocks": self.window_blocks, "list_size": self.list_size or 0}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues exactly where :meth:`get_state` was taken.

    Raises:
      ValueError: when the state was saved for other data, batch size, seed,
        sharding, window or list size.
    """
    current = self.get_state()
    # The unit (list_size) first: it also changes num_rows, and is the clearer cause.
    for key in ("seed", "list_size", "window_blocks", "process_index", "process_count",
                "global_batch_size", "num_rows"):
      if int(state[key]) != current[key]:
        raise ValueError(f"StreamingBatcher state was saved with {key}={state[key]}, "
                         f"but this batcher has {key}={current[key]}")
    epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
    if epoch < 0 or not 0 <= step < self.steps_per_epoch:
      raise ValueError(f"StreamingBatcher state out of range: epoch={epoch}, step_in_epoch={step}")
    self._epoch, self._step_in_epoch, self._stream = epoch, step, None

  @property
  def exhausted(self) -> bool:
    return self.num_epochs is not None and self._epoch >= self.num_epochs

  # -- epoch plan -----------------------------------------------------------------
  def epoch_windows(self, epoch: int) -> list[np.ndarray]:
    """Block indices of each window this process reads in ``epoch``, in order."""
    blocks = self._my_blocks
    if self.shuffle:
      rng = np.random.default_rng([self.seed, epoch, self.shard.shard_index])
      blocks = rng.permutation(blocks)
    return [blocks[i:i + self.window_blocks] for i in range(0, len(blocks), self.window_blocks)]

  def _load_window(self, epoch: int, window: int, block_ids: np.ndarray) -> dict[str, np.ndarray]:
    blocks = [self.source.read(i) for i in block_ids]
    columns = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    if self.list_size is not None:
      sizes = [s for i in block_ids for s in self.source.group_sizes[i]]
      columns = group_into_lists(columns, sizes, self.list_size)
    if self.shuffle:
      rng = np.random.default_rng([self.seed, epoch, self.shard.shard_index, window])
      order = rng.permutation(len(next(iter(columns.values()))))
      columns = {k: v[order] for k, v in columns.items()}
    return columns

  def _padding_template(self) -> dict[str, np.ndarray]:
    if self._template is None:
      first = self.source.read(0)
      if self.list_size is not None:
        first = group_into_lists({k: v[:1] for k, v in first.items()}, [1], self.list_size)
      self._template = {k: np.zeros_like(v[:1]) for k, v in first.items()}
    return self._template

  def _epoch_batches(self, epoch: int, first_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Local batches ``[local_batch, ...]`` of ``epoch`` from ``first_step`` on."""
    b = self.local_batch_size
    windows = self.epoch_windows(epoch)
    window_units = [int(self._units[w].sum()) for w in windows]
    offsets = np.concatenate([[0], np.cumsum(window_units)]).astype(np.int64)
    skip = first_step * b
    first_window = int(np.searchsorted(offsets, skip, side="right")) - 1
    first_window = min(max(first_window, 0), len(windows))
    plan = [(w, windows[w]) for w in range(first_window, len(windows))]
    loaded = grain.MapDataset.source(plan).map(lambda item: self._load_window(epoch, *item))
    loaded = loaded.to_iter_dataset(grain.ReadOptions(num_threads=self.read_threads,
                                                      prefetch_buffer_size=2))
    pieces, filled, step = [], 0, first_step
    position = skip - int(offsets[first_window]) if plan else 0
    for columns in (loaded if plan else ()):
      total = len(next(iter(columns.values())))
      while position < total:
        take = min(b - filled, total - position)
        pieces.append({k: v[position:position + take] for k, v in columns.items()})
        position, filled = position + take, filled + take
        if filled == b:
          yield self._assemble(pieces, b)
          pieces, filled, step = [], 0, step + 1
      position = 0
    while step < self.steps_per_epoch:
      yield self._assemble(pieces, b)
      pieces, step = [], step + 1

  def _assemble(self, pieces: list[dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
    """Concatenates pieces and pads them to ``size`` units with masked zeros."""
    valid = sum(len(next(iter(p.values()))) for p in pieces)
    if valid < size:
      template = self._padding_template()
      pieces = pieces + [{k: np.repeat(v, size - valid, axis=0) for k, v in template.items()}]
    batch = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    mask = np.zeros(size, bool)
    mask[:valid] = True
    batch[MASK] = mask
    return batch

  # -- iteration ----------------------------------------------------------------
  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    if self.exhausted:
      raise StopIteration
    if self._stream is None:
      self._stream = self._epoch_batches(self._epoch, self._step_in_epoch)
    batch = next(self._stream)
    self._step_in_epoch += 1
    if self._step_in_epoch == self.steps_per_epoch:
      self._epoch, self._step_in_epoch, self._stream = self._epoch + 1, 0, None
    if self.sharding is not None:
      if jax.process_count() == 1:
        # One process holds the whole global batch: a single batched transfer is faster.
        return jax.device_put(batch, self.sharding)
      global_shape = lambda x: (self.global_batch_size,) + x.shape[1:]
      batch = {k: jax.make_array_from_process_local_data(self.sharding, v, global_shape(v))
               for k, v in batch.items()}
    return batch


def streaming_eval_batches(source: BlockSource, global_batch_size: int, *,
                           mesh: Mesh | None = None,
                           shard: grain.sharding.ShardOptions | None = None,
                           list_size: int | None = None) -> StreamingBatcher:
  """One ordered pass over ``source`` with padded, masked last batches."""
  return StreamingBatcher(source, global_batch_size, shuffle=False, num_epochs=1, mesh=mesh,
                          shard=shard, list_size=list_size)
