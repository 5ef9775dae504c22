"""Streaming batches over TFDS array_record blocks with grain: the out-of-memory path.

Produces the same batches as :class:`~hgrank_jax.data.inmemory.ArrayBatcher`
(a dict of columns ``[global_batch, ...]`` plus bool ``"mask"``, padded last
steps, ``get_state``/``set_state``, global arrays on a ``data`` mesh) for data
that does not fit in memory, reading only one process's share of the records.

* Records are blocks of whole users (:mod:`~hgrank_jax.data.tfds_builders`), so
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
* Block datasets (:class:`BlockDatasetWriter`, :func:`open_block_dataset`): a
  plain array_record layout (``blocks.json`` plus ``<split>-NNNNN.array_record``
  shards, one record per block of ``block_rows`` rows) written chunk by chunk in
  bounded memory, for data generated at scale (e.g. 10M simulator rows) rather
  than read from official files. The trainer streams them with
  ``config.data_source = "streaming"``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from hgrank_jax.data.inmemory import MASK
from hgrank_jax.train.sharding import batch_sharding, check_batch_divisible

WHERE = "where"
_BLOCK_INDEX = "block_index"
BLOCKS_METADATA = "blocks.json"


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


# -- block datasets: array_record shards written in bounded memory -----------------

def encode_block(columns: Mapping[str, np.ndarray]) -> bytes:
  """One block (column -> ``[rows, ...]``) as bytes (an uncompressed ``.npz``)."""
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in columns.items()})
  return buffer.getvalue()


def decode_block(data: bytes) -> dict[str, np.ndarray]:
  """Inverse of :func:`encode_block`."""
  with np.load(io.BytesIO(data), allow_pickle=False) as npz:
    return {k: npz[k] for k in npz.files}


class BlockDatasetWriter:
  """Writes splits of columns as array_record shards of fixed-size blocks.

  Rows are appended with :meth:`write` in any number of chunks; each split keeps
  at most ``block_rows - 1`` rows buffered and one shard file open, so memory is
  bounded by the largest chunk plus one block per split, whatever the total
  size. Blocks hold ``block_rows`` consecutive rows (the last block of a split
  may hold fewer); they carry no per-user grouping, so the result streams row
  batches (not ``list_size`` lists). :meth:`close` writes ``blocks.json``.

  Args:
    directory: created if missing; must not already hold a block dataset.
    spec: the columns' FeatureSpec (stored; anything with ``to_dict()``), or None.
    block_rows: rows per block (one array_record record).
    blocks_per_shard: blocks per ``<split>-NNNNN.array_record`` file.
    info: JSON-serialisable facts stored in ``blocks.json``.
  """

  def __init__(self, directory: str | os.PathLike, spec=None, *, block_rows: int = 4096,
               blocks_per_shard: int = 256, info: Mapping[str, Any] | None = None):
    if block_rows < 1 or blocks_per_shard < 1:
      raise ValueError("BlockDatasetWriter: block_rows and blocks_per_shard must be >= 1")
    self.directory = pathlib.Path(directory)
    if (self.directory / BLOCKS_METADATA).exists():
      raise FileExistsError(f"{self.directory} already holds a block dataset; use another "
                            "directory or delete it")
    self.directory.mkdir(parents=True, exist_ok=True)
    self.spec, self.block_rows, self.blocks_per_shard = spec, int(block_rows), int(blocks_per_shard)
    self.info = dict(info or {})
    self._buffers: dict[str, list[dict[str, np.ndarray]]] = {}
    self._buffered: dict[str, int] = {}
    self._rows_per_block: dict[str, list[int]] = {}
    self._files: dict[str, list[str]] = {}
    self._writer: dict[str, Any] = {}
    self._dtypes: dict[str, dict[str, str]] = {}

  def write(self, split: str, columns: Mapping[str, np.ndarray]) -> None:
    """Appends rows (column -> ``[rows, ...]``, the same columns every time) to ``split``."""
    columns = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
      raise ValueError(f"BlockDatasetWriter.write({split!r}): columns differ in length")
    dtypes = {k: str(v.dtype) for k, v in columns.items()}
    if self._dtypes.setdefault(split, dtypes) != dtypes:
      raise ValueError(f"BlockDatasetWriter.write({split!r}): columns or dtypes changed from "
                       f"{self._dtypes[split]} to {dtypes}")
    if not lengths.pop():
      return
    pieces = self._buffers.get(split, []) + [columns]
    merged = {k: np.concatenate([p[k] for p in pieces]) for k in columns} if len(pieces) > 1 \
        else columns
    total = len(next(iter(merged.values())))
    start = 0
    while total - start >= self.block_rows:
      self._emit(split, {k: v[start:start + self.block_rows] for k, v in merged.items()})
      start += self.block_rows
    self._buffers[split] = [{k: v[start:] for k, v in merged.items()}] if start < total else []
    self._buffered[split] = total - start

  def _emit(self, split: str, block: Mapping[str, np.ndarray]) -> None:
    rows = len(next(iter(block.values())))
    count = self._rows_per_block.setdefault(split, [])
    if len(count) % self.blocks_per_shard == 0:
      from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
      if split in self._writer:
        self._writer[split].close()
      name = f"{split}-{len(count) // self.blocks_per_shard:05d}.array_record"
      self._files.setdefault(split, []).append(name)
      self._writer[split] = ArrayRecordWriter(str(self.directory / name), "group_size:1")
    self._writer[split].write(encode_block(block))
    count.append(rows)

  def close(self) -> dict[str, Any]:
    """Flushes the last partial blocks, closes the shards and writes ``blocks.json``."""
    for split, pieces in self._buffers.items():
      if pieces:
        self._emit(split, pieces[0])
      self._buffers[split] = []
    for writer in self._writer.values():
      writer.close()
    self._writer.clear()
    metadata = {
        "format": "hgrank_jax block dataset v1",
        "block_rows": self.block_rows,
        "spec": self.spec.to_dict() if self.spec is not None else None,
        "info": self.info,
        "splits": {split: {"num_rows": int(sum(rows)), "rows_per_block": rows,
                           "files": self._files[split], "dtypes": self._dtypes[split]}
                   for split, rows in self._rows_per_block.items()},
    }
    temporary = self.directory / f".{BLOCKS_METADATA}.tmp"
    temporary.write_text(json.dumps(metadata))
    os.replace(temporary, self.directory / BLOCKS_METADATA)  # present only when complete
    return metadata


class _DecodedRecords(Sequence):
  """Random access to the decoded blocks of array_record files (grain's data source)."""

  def __init__(self, paths: Sequence[str]):
    self._source = grain.sources.ArrayRecordDataSource(list(paths))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    return decode_block(self._source[int(index)])


class BlockDataset:
  """A block dataset on disk (see :class:`BlockDatasetWriter`).

  Attributes:
    directory: where ``blocks.json`` and the shards live.
    metadata: the parsed ``blocks.json``.
    spec: the stored FeatureSpec (None if none was stored).
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory).expanduser()
    path = self.directory / BLOCKS_METADATA
    if not path.is_file():
      raise FileNotFoundError(
          f"{self.directory} holds no block dataset ({BLOCKS_METADATA} is missing: not written, "
          "or the writer did not finish); write one with BlockDatasetWriter, e.g. "
          "python benchmarks/pipeline.py --simulator_rows N --keep_dir DIR")
    self.metadata = json.loads(path.read_text())
    spec = self.metadata.get("spec")
    if spec is not None:
      from hgrank_jax.data.features import FeatureSpec  # pylint: disable=g-import-not-at-top
      spec = FeatureSpec.from_dict(spec)
    self.spec = spec

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.metadata["splits"])

  def _split(self, split: str) -> Mapping[str, Any]:
    if split not in self.metadata["splits"]:
      raise KeyError(f"{self.directory} has no split {split!r}; splits are {list(self.splits)}")
    return self.metadata["splits"][split]

  def num_rows(self, split: str) -> int:
    return int(self._split(split)["num_rows"])

  def source(self, split: str, columns: Sequence[str] | None = None) -> BlockSource:
    """The split's blocks for :class:`StreamingBatcher` (row batches)."""
    layout = self._split(split)
    paths = [str(self.directory / name) for name in layout["files"]]
    return BlockSource(_DecodedRecords(paths), layout["rows_per_block"], columns=columns)

  def load_split(self, split: str, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Every row of ``split`` in memory (evaluation splits)."""
    source = self.source(split, columns)
    blocks = [source.read(i) for i in range(len(source))]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def open_block_dataset(directory: str | os.PathLike) -> BlockDataset:
  """Opens a directory written by :class:`BlockDatasetWriter`."""
  return BlockDataset(directory)


def write_block_dataset(directory: str | os.PathLike,
                        chunks: Iterable[Mapping[str, Mapping[str, np.ndarray]]], spec=None, *,
                        block_rows: int = 4096, blocks_per_shard: int = 256,
                        info: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes ``chunks`` (each split -> columns) as a block dataset; returns the metadata."""
  writer = BlockDatasetWriter(directory, spec, block_rows=block_rows,
                              blocks_per_shard=blocks_per_shard, info=info)
  for chunk in chunks:
    for split, columns in chunk.items():
      writer.write(split, columns)
  return writer.close()
