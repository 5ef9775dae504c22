"""TFDS builders (TensorFlow-free, ``array_record``) for the official datasets.

Every official dataset module (:mod:`~hgrank_jax.data.official.kuairand`,
:mod:`~hgrank_jax.data.official.movielens`, :mod:`~hgrank_jax.data.official.taobao`) exposes
``read(manual_dir, config, skip_malformed=...) -> (spec, columns, info)`` and
``expected_files(config)``. This module turns that into:

* :func:`to_dataset` — the in-memory :class:`Dataset`, split 70/10/20 per user
  with the paper's stratified protocol (:func:`split_rows`).
* :func:`prepare` — a TFDS build into ``data_dir`` (``file_format="array_record"``,
  readable with ``as_data_source()`` and no TensorFlow). Nothing is downloaded:
  the files come from ``manual_dir`` only.

Record layout (why blocks): reading one record per row runs at ~20k rows/s, far
below a train step, so each record is a *block* of whole users (at least
``block_rows`` rows, a user is never cut): every column is stored as a
``[rows_in_block, ...]`` tensor. Users appear in a seeded random order, each
user's rows in time order, so the streaming pipeline can shuffle blocks and
rows within a window of blocks, and build per-user lists without a global sort.
The dataset metadata (``metadata.json``) holds the FeatureSpec, the reading
info (skipped rows, unknown values), the split seed and, per split, the rows
and per-user group sizes of every block.
"""

from __future__ import annotations

import functools
import importlib
import pathlib
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from hgrank_jax.data.dataset import SPLITS, Dataset
from hgrank_jax.data.formats import csv_core
from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.data.splits import split_rows

DEFAULT_BLOCK_ROWS = 1024
BLOCK_INDEX = "block_index"
VERSION = "1.0.0"
# TFDS builder name -> (module, its configs). Names carry a prefix so they never
# collide with TFDS's own catalog (which has a `movielens`).
BUILDERS = {
    "kuairand": ("hgrank_jax.data.official.kuairand", ("pure", "1k", "27k")),
    "movielens": ("hgrank_jax.data.official.movielens", ("100k", "1m")),
    "taobao_ad": ("hgrank_jax.data.official.taobao", ("default",)),
    "taobao_userbehavior": ("hgrank_jax.data.official.taobao", ("default",)),
}


def dataset_module(name: str):
  """The module that reads dataset ``name`` (``read`` and ``expected_files``)."""
  if name not in BUILDERS:
    raise ValueError(f"unknown official dataset {name!r}; known: {sorted(BUILDERS)}")
  module = importlib.import_module(BUILDERS[name][0])
  if name.startswith("taobao"):
    return module.reader(name)
  return module


def read(name: str, config: str, manual_dir, *, skip_malformed: bool = False, **options):
  """``(spec, columns, info)`` of one official dataset read from ``manual_dir``.

  ``options`` go to the dataset's reader (e.g. ``label_threshold`` for MovieLens).
  """
  manual_dir = pathlib.Path(manual_dir).expanduser()
  return dataset_module(name).read(manual_dir, config, skip_malformed=skip_malformed, **options)


def assign_splits(spec: FeatureSpec, columns: Mapping[str, np.ndarray], seed: int
                  ) -> Mapping[str, np.ndarray]:
  """Row indices per split: per user, stratified on the default label (70/10/20)."""
  return split_rows(np.asarray(columns[spec.user_field]), np.asarray(columns[spec.label]),
                    seed=seed)


def to_dataset(name: str, spec: FeatureSpec, columns: Mapping[str, np.ndarray], info: Mapping,
               *, seed: int = 0) -> Dataset:
  """The in-memory Dataset of ``columns``, re-split per user with ``seed``."""
  indices = assign_splits(spec, columns, seed)
  splits = {split: {k: v[idx] for k, v in columns.items()} for split, idx in indices.items()}
  info = dict(info, seed=seed, split_protocol="per-user 70/10/20, stratified on "
              f"{spec.label} (hgrank_jax.data.splits)")
  return Dataset(name, spec, splits, info)


def load(name: str, config: str, *, seed: int = 0, manual_dir=None,
         skip_malformed: bool = False, **options) -> Dataset:
  """Reads an official dataset from ``manual_dir`` straight into memory (no TFDS build)."""
  if manual_dir is None:
    files = "\n".join(f"  {p}: {what}" for p, what in
                      dataset_module(name).expected_files(config).items())
    raise ValueError(f"{name}:{config} needs manual_dir=DIR holding the official files:\n{files}\n"
                     f"{dataset_module(name).INSTRUCTIONS}")
  spec, columns, info = read(name, config, manual_dir, skip_malformed=skip_malformed, **options)
  return to_dataset(f"{name}:{config}", spec, columns, info, seed=seed)


def block_layout(user_ids: np.ndarray, order_key: np.ndarray | None, *, block_rows: int,
                 seed: int) -> tuple[list[np.ndarray], list[list[int]]]:
  """Cuts rows into blocks of whole users.

  Args:
    user_ids: int ``[n]``.
    order_key: sort key ``[n]`` within a user (e.g. time), or None for row order.
    block_rows: a block closes at the first user boundary at or after this many rows.
    seed: order of users.

  Returns:
    (row indices of each block, per-block list of the group (user) sizes in order).
  """
  user_ids = np.asarray(user_ids)
  distinct, user_index = np.unique(user_ids, return_inverse=True)
  user_rank = np.random.default_rng(seed).permutation(len(distinct))[user_index]
  within = np.arange(len(user_ids)) if order_key is None else np.asarray(order_key)
  order = np.lexsort((np.arange(len(user_ids)), within, user_rank))
  sizes = np.bincount(user_rank, minlength=len(distinct))
  blocks, groups, start, current, filled = [], [], 0, [], 0
  for size in sizes.tolist():
    current.append(size)
    filled += size
    if filled >= block_rows:
      blocks.append(order[start:start + filled])
      groups.append(current)
      start, current, filled = start + filled, [], 0
  if current:
    blocks.append(order[start:start + filled])
    groups.append(current)
  return blocks, groups


def _tensor_features(columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
  features = {name: tfds.features.Tensor(shape=(None,) + values.shape[1:], dtype=values.dtype)
              for name, values in columns.items()}
  features[BLOCK_INDEX] = np.int64
  return features


@functools.cache
def builder_class(name: str) -> type:
  """The TFDS builder class of official dataset ``name`` (created once, unregistered)."""
  configs = BUILDERS[name][1]

  class OfficialBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds ``name`` from the official files in ``manual_dir``; see the module docstring."""

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c) for c in configs]
    MANUAL_DOWNLOAD_INSTRUCTIONS = dataset_module(name).INSTRUCTIONS

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      # TFDS looks for a checksums file beside the builder's code, and that lookup
      # needs the optional `importlib_resources` package for an installed module.
      # Nothing is downloaded here, so there are no checksums to find.
      return None

    def __init__(self, *, split_seed: int = 0, skip_malformed: bool = False,
                 block_rows: int = DEFAULT_BLOCK_ROWS, preloaded=None, reader_options=None,
                 **kwargs):
      # `preloaded` = read(...) result: the features dict (dtypes, trailing shapes)
      # must be known in _info(), before generation, and reading twice is slow.
      self._split_seed = int(split_seed)
      self._skip_malformed = bool(skip_malformed)
      self._block_rows = int(block_rows)
      self._preloaded = preloaded
      self._options = dict(reader_options or {})
      super().__init__(**kwargs)

    def _info(self):
      features = None  # reading a prepared dataset: TFDS restores them from features.json
      if self._preloaded is not None:
        features = tfds.features.FeaturesDict(_tensor_features(self._preloaded[1]))
      return tfds.core.DatasetInfo(
          builder=self, description=f"{name} ({self.builder_config.name}) from the official "
          "files, in blocks of whole users; see hgrank_jax.data.official.tfds_builders.",
          features=features, metadata=tfds.core.MetadataDict(), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      if self._preloaded is None:
        raise ValueError(f"build {name} with hgrank_jax.data.official.tfds_builders.prepare(), which "
                         "reads the official files first")
      spec, columns, info = self._preloaded
      indices = assign_splits(spec, columns, self._split_seed)
      empty = [split for split, rows in indices.items() if not len(rows)]
      if empty:  # TFDS cannot write a split without records
        raise ValueError(f"{name}: split(s) {empty} get no rows from the per-user 70/10/20 "
                         f"split of {len(columns[spec.label])} rows; the data is too small")
      order_key = columns.get("time_ms", columns.get("timestamp"))
      layout = {}
      for split, rows in indices.items():
        blocks, groups = block_layout(
            columns[spec.user_field][rows], None if order_key is None else order_key[rows],
            block_rows=self._block_rows, seed=self._split_seed)
        layout[split] = [rows[b] for b in blocks], groups
      self.info.metadata.update({
          "spec": spec.to_dict(), "info": _jsonable(info), "split_seed": self._split_seed,
          "reader_options": _jsonable(self._options),
          "block_rows": self._block_rows,
          "splits": {split: {"num_rows": int(len(indices[split])),
                             "rows_per_block": [int(len(b)) for b in blocks],
                             "group_sizes": groups}
                     for split, (blocks, groups) in layout.items()}})
      return {split: self._generate_examples(columns, blocks)
              for split, (blocks, _) in layout.items()}

    def _generate_examples(self, columns, blocks):
      for index, rows in enumerate(blocks):
        record = {k: v[rows] for k, v in columns.items()}
        record[BLOCK_INDEX] = index
        yield index, record

  OfficialBuilder.name = f"hgrank_{name}"
  OfficialBuilder.__name__ = OfficialBuilder.__qualname__ = f"Hgrank{name.title()}Builder"
  return OfficialBuilder


def _jsonable(value):
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def prepare(name: str, config: str, *, manual_dir, data_dir, split_seed: int = 0,
            skip_malformed: bool = False, block_rows: int = DEFAULT_BLOCK_ROWS, **options):
  """Builds ``name:config`` into ``data_dir`` from the files in ``manual_dir`` (no download).

  An existing build with the same seed and block size is reused; a different one
  is an error (use another ``data_dir``) rather than a silent mix. ``options``
  go to the dataset's reader and are recorded in the metadata.

  Returns:
    The TFDS builder; ``builder.as_data_source()[split]`` reads blocks.

  Raises:
    FileNotFoundError: naming every expected file and where to obtain it.
  """
  module = dataset_module(name)
  manual_dir, data_dir = pathlib.Path(manual_dir).expanduser(), pathlib.Path(data_dir).expanduser()
  csv_core.check_files(manual_dir, module.expected_files(config), dataset=f"{name}:{config}",
                       instructions=module.INSTRUCTIONS)
  existing = open_builder(name, config, data_dir=data_dir, must_exist=False)
  if existing is not None:
    metadata = existing.info.metadata
    asked = {"split_seed": split_seed, "block_rows": block_rows,
             "reader_options": _jsonable(options)}
    have = {key: metadata.get(key, {} if key == "reader_options" else None) for key in asked}
    if have != asked:
      describe = lambda d: ", ".join(f"{k}={v}" for k, v in d.items())
      raise ValueError(f"{existing.data_dir} was prepared with {describe(have)}; asked for "
                       f"{describe(asked)}. Use another data_dir.")
    return existing
  preloaded = read(name, config, manual_dir, skip_malformed=skip_malformed, **options)
  builder = builder_class(name)(config=config, data_dir=data_dir, file_format="array_record",
                                split_seed=split_seed, skip_malformed=skip_malformed,
                                block_rows=block_rows, preloaded=preloaded,
                                reader_options=options)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return open_builder(name, config, data_dir=data_dir)


def open_builder(name: str, config: str, *, data_dir, must_exist: bool = True):
  """The builder of a prepared dataset in ``data_dir`` (None if absent and not must_exist)."""
  data_dir = pathlib.Path(data_dir).expanduser()
  builder = builder_class(name)(config=config, data_dir=data_dir)
  if not pathlib.Path(builder.data_dir, "dataset_info.json").is_file():
    if must_exist:
      raise FileNotFoundError(
          f"{name}:{config} is not prepared in {data_dir}; run "
          f"hgrank_jax.data.official.tfds_builders.prepare({name!r}, {config!r}, manual_dir=DIR, "
          f"data_dir={str(data_dir)!r}) first")
    return None
  return builder


def spec_of(builder) -> FeatureSpec:
  """The FeatureSpec stored with a prepared dataset."""
  return FeatureSpec.from_dict(builder.info.metadata["spec"])


def load_prepared(name: str, config: str, *, data_dir) -> Dataset:
  """Reads every block of a prepared dataset back into an in-memory Dataset."""
  builder = open_builder(name, config, data_dir=data_dir)
  sources = builder.as_data_source()
  splits = {}
  for split in SPLITS:
    source = sources[split]
    blocks = [source[i] for i in range(len(source))]
    splits[split] = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]
                     if k != BLOCK_INDEX}
  metadata = builder.info.metadata
  info = dict(metadata["info"], split_seed=metadata["split_seed"], data_dir=str(builder.data_dir))
  return Dataset(f"{name}:{config}", spec_of(builder), splits, info)
