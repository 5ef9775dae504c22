"""The bundled KuaiRand subset (SIGformer preprocessing) and its two views.

The files in ``bundled/kuairand_sig/`` are KuaiRand interactions (Kuaishou,
CC BY-SA 4.0) as preprocessed and re-indexed by the SIGformer authors: space
separated ``user item label`` rows, users 0..16973, items 0..4372, labels 0/1.
See ``bundled/kuairand_sig/PROVENANCE.md`` for where they come from and what is
unknown about them (notably which KuaiRand signal the label is).

Two views:

* ``given`` — the train/valid/test files as shipped.
* ``paper`` — all rows pooled, exact duplicate rows (same user, item and label)
  removed and counted, then re-split 70/10/20 per user with the paper's
  stratified protocol (:func:`hgrank_jax.data.splits.split_rows`), seeded.
  Table 1 uses this view.
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np

from hgrank_jax.data.dataset import Dataset, SPLITS
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec
from hgrank_jax.data.splits import split_rows

BUNDLED_DIR = pathlib.Path(__file__).parent / "bundled" / "kuairand_sig"
VIEWS = ("given", "paper")
NUM_USERS = 16974
NUM_ITEMS = 4373
# sha256 of the shipped files (from PROVENANCE.md); a mismatch means the files changed.
SHA256 = {
    "train.txt": "5f901b9da01e639d2cd7709bf7a1fe1b1843b6986a0b2e4dbf44ee2d55929154",
    "valid.txt": "fb0234e9bdeae98b6f8bace129c96961f083b4dd77f05db2862fef6e47c34563",
    "test.txt": "2465b4033e2f0740de82c8bf61a6cc6e20c9c4d0d8ae8d72ed7760e5b7af2d24",
}
_FILE_OF_SPLIT = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


def feature_spec(num_users: int = NUM_USERS, num_items: int = NUM_ITEMS) -> FeatureSpec:
  """user_id feeds the user tower, item_id the item tower; one label (a click, most likely)."""
  return FeatureSpec(
      categorical=(CategoricalFeature("user_id", num_users, tower="user"),
                   CategoricalFeature("item_id", num_items, tower="item")),
      labels=("label",),
      user_field="user_id",
      item_field="item_id",
  )


def read_interactions(path: pathlib.Path | str, *, num_users: int = NUM_USERS,
                      num_items: int = NUM_ITEMS) -> dict[str, np.ndarray]:
  """Reads one ``user item label`` file into int32/int32/float32 columns.

  Raises:
    FileNotFoundError: naming the missing file and the bundled directory.
    ValueError: naming the file and the problem (wrong column count, ids out of
      range, labels other than 0/1).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"KuaiRand subset file {path} is missing; expected {sorted(_FILE_OF_SPLIT.values())} in "
        f"{path.parent}. Reinstall hgrank_jax or restore the files from the repository.")
  try:
    table = np.loadtxt(path, dtype=np.float64, ndmin=2)
  except ValueError as e:
    raise ValueError(f"{path}: cannot parse as 'user item label' rows: {e}") from e
  if table.shape[1] != 3:
    raise ValueError(f"{path}: expected 3 columns (user item label), found {table.shape[1]}")
  users, items, labels = table[:, 0], table[:, 1], table[:, 2]
  for name, values, limit in (("user", users, num_users), ("item", items, num_items)):
    bad = np.nonzero((values != np.round(values)) | (values < 0) | (values >= limit))[0]
    if bad.size:
      raise ValueError(f"{path}: line {bad[0] + 1}: {name} id {values[bad[0]]} is not an "
                       f"integer in [0, {limit}) ({bad.size} such lines)")
  bad = np.nonzero((labels != 0) & (labels != 1))[0]
  if bad.size:
    raise ValueError(f"{path}: line {bad[0] + 1}: label {labels[bad[0]]} is not 0 or 1 "
                     f"({bad.size} such lines)")
  return {"user_id": users.astype(np.int32), "item_id": items.astype(np.int32),
          "label": labels.astype(np.float32)}


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def load(view: str = "paper", *, seed: int = 0, data_dir: pathlib.Path | str | None = None,
         check_hashes: bool = True) -> Dataset:
  """Loads the bundled KuaiRand subset.

  Args:
    view: "given" (files as shipped) or "paper" (pooled, deduplicated, re-split
      70/10/20 per user, stratified).
    seed: seed of the ``paper`` split (ignored by ``given``).
    data_dir: directory with train.txt/valid.txt/test.txt; defaults to the copy
      shipped inside the package.
    check_hashes: verify the shipped files' sha256 (only for the bundled copy).

  Returns:
    A :class:`Dataset` with columns user_id (int32 ``[n]``), item_id (int32
    ``[n]``) and label (float32 ``[n]``) per split. ``info`` records the source,
    the view, the seed and, for ``paper``, how many duplicate rows were removed.
  """
  if view not in VIEWS:
    raise ValueError(f"kuairand_sig has no view {view!r}; views are {list(VIEWS)}")
  directory = pathlib.Path(data_dir) if data_dir is not None else BUNDLED_DIR
  if not directory.is_dir():
    raise FileNotFoundError(f"KuaiRand subset directory {directory} does not exist")
  files = {split: read_interactions(directory / _FILE_OF_SPLIT[split]) for split in SPLITS}
  if check_hashes and data_dir is None:
    for name, digest in SHA256.items():
      if _sha256(directory / name) != digest:
        raise ValueError(f"{directory / name}: sha256 differs from the shipped file; the bundled "
                         "data was modified. Restore it from the repository.")
  info = {"source": "KuaiRand via SIGformer preprocessing (CC BY-SA 4.0)",
          "directory": str(directory), "view": view}
  if view == "given":
    return Dataset(f"kuairand_sig:{view}", feature_spec(), files, info)

  pooled = {k: np.concatenate([files[s][k] for s in SPLITS]) for k in files["train"]}
  rows = np.stack([pooled["user_id"].astype(np.int64), pooled["item_id"].astype(np.int64),
                   pooled["label"].astype(np.int64)], axis=1)
  _, first = np.unique(rows, axis=0, return_index=True)
  keep = np.sort(first)  # first occurrence of each distinct (user, item, label) row
  pooled = {k: v[keep] for k, v in pooled.items()}
  pairs = np.unique(rows[keep, :2], axis=0).shape[0]
  splits = split_rows(pooled["user_id"], pooled["label"], seed=seed)
  info.update(seed=seed, pooled_rows=int(len(rows)), duplicate_rows_removed=int(len(rows) - len(keep)),
              user_item_pairs_with_both_labels=int(len(keep) - pairs),
              split_protocol="per-user 70/10/20, stratified on positives (hgrank_jax.data.splits)")
  return Dataset(f"kuairand_sig:{view}", feature_spec(),
                 {name: {k: v[idx] for k, v in pooled.items()} for name, idx in splits.items()}, info)
