"""The in-memory dataset container shared by every loader.

A :class:`Dataset` is a name, a :class:`~hgrank_jax.data.features.FeatureSpec`,
and per split a dict of equally long numpy columns. The bundled KuaiRand subset,
the simulator and small official datasets all load into it; the in-memory
batcher (:mod:`hgrank_jax.data.inmemory`) turns one split into device batches.
Construction checks every split against the spec (ids inside the vocabulary,
finite numbers and labels) and refuses an empty split, naming it, so a bad
dataset fails when it is built rather than after a model has compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from hgrank_jax.data.features import FeatureSpec

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Columns per split plus their spec.

  Attributes:
    name: e.g. "kuairand_sig:paper".
    spec: the columns' roles and vocabulary sizes.
    splits: split name -> column name -> array ``[n_split, ...]``.
    info: facts about how it was built (source files, rows removed and why,
      seeds), JSON-serialisable, reported by ``launch.data_stats``.
  """

  name: str
  spec: FeatureSpec
  splits: Mapping[str, Mapping[str, np.ndarray]]
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for split, columns in self.splits.items():
      self.spec.validate(columns, where=f"{self.name}[{split}]")
      if not len(columns[self.spec.label]):
        raise ValueError(
            f"{self.name}[{split}]: the split has no rows; training and evaluation need rows in "
            f"every split ({ {s: len(c[self.spec.label]) for s, c in self.splits.items()} } rows "
            "per split). Use more data, other split fractions, or drop the split.")

  def split(self, name: str) -> Mapping[str, np.ndarray]:
    """The columns of one split; a clear error names the splits that exist."""
    if name not in self.splits:
      raise KeyError(f"{self.name} has no split {name!r}; splits are {sorted(self.splits)}")
    return self.splits[name]

  def num_rows(self, split: str) -> int:
    return len(self.split(split)[self.spec.label])
