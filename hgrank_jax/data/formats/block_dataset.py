"""Block datasets: array_record shards of fixed-size row blocks, written in bounded memory.

A plain layout for data generated at scale (e.g. 10M simulator rows) rather than
read from official files: ``blocks.json`` plus ``<split>-NNNNN.array_record``
shards, one record per block of ``block_rows`` rows. :class:`BlockDatasetWriter`
writes it chunk by chunk; :func:`open_block_dataset` reads it back as
:class:`~hgrank_jax.data.pipeline.BlockSource` splits for the
:class:`~hgrank_jax.data.pipeline.StreamingBatcher`. The trainer streams them with
``config.data_source = "streaming"``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import grain
import numpy as np

from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.data.pipeline import BlockSource

BLOCKS_METADATA = "blocks.json"


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
