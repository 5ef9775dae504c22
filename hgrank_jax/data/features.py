"""Feature specifications: which columns a dataset has and how models embed them.

A :class:`FeatureSpec` names the categorical fields (with vocabulary sizes and the
tower they feed: user, item or context), the numeric fields, the label fields and
the special columns (user id for GAUC and grouping, item category for list
metrics). Models read it to build their embedding tables; loaders and the batcher
use it to check that arrays match. The default embedding width follows the paper
(seed 002, section 6.1.3): ``max(floor(log2(cardinality)) * 2, 16)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

TOWERS = ("user", "item", "context")


def embedding_size(cardinality: int, *, minimum: int = 16, multiplier: int = 2) -> int:
  """Embedding width for a categorical field: ``max(floor(log2(cardinality)) * 2, 16)``.

  Computed with integer arithmetic (``bit_length``), so powers of two are exact.

  Args:
    cardinality: number of distinct values (vocabulary size), >= 1.
    minimum: lower bound on the width (16 in the paper).
    multiplier: factor applied to floor(log2(cardinality)) (2 in the paper).

  Returns:
    The embedding width, a positive int.

  >>> embedding_size(4373), embedding_size(16974), embedding_size(2)
  (24, 28, 16)
  """
  cardinality = int(cardinality)
  if cardinality < 1:
    raise ValueError(f"cardinality must be >= 1, got {cardinality}")
  floor_log2 = cardinality.bit_length() - 1
  return max(floor_log2 * multiplier, minimum)


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  """An integer-coded field with values in ``[0, vocab_size)``.

  Attributes:
    name: column name in the batch.
    vocab_size: number of distinct ids, including any explicit unknown bucket.
    tower: which tower embeds it: "user", "item" or "context".
    embedding_dim: width override; None uses :func:`embedding_size`.
  """

  name: str
  vocab_size: int
  tower: str = "context"
  embedding_dim: int | None = None

  def __post_init__(self):
    if self.vocab_size < 1:
      raise ValueError(f"feature {self.name!r}: vocab_size must be >= 1, got {self.vocab_size}")
    if self.tower not in TOWERS:
      raise ValueError(f"feature {self.name!r}: tower must be one of {TOWERS}, got {self.tower!r}")
    if self.embedding_dim is not None and self.embedding_dim < 1:
      raise ValueError(f"feature {self.name!r}: embedding_dim must be >= 1")

  @property
  def dim(self) -> int:
    return self.embedding_dim if self.embedding_dim is not None else embedding_size(self.vocab_size)


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  """A float field of shape ``[..., dim]`` (``dim == 1`` is stored as ``[...]``)."""

  name: str
  dim: int = 1
  tower: str = "context"

  def __post_init__(self):
    if self.dim < 1:
      raise ValueError(f"feature {self.name!r}: dim must be >= 1, got {self.dim}")
    if self.tower not in TOWERS:
      raise ValueError(f"feature {self.name!r}: tower must be one of {TOWERS}, got {self.tower!r}")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """The columns of a dataset and their roles.

  Attributes:
    categorical: integer-coded fields, each embedded by a model.
    numeric: float fields.
    labels: label column names; the first is the default training target.
    user_field: column holding the user id (GAUC groups, per-user splits), if any.
    item_field: column holding the item id, if any.
    category_field: column holding the item category, if any.
  """

  categorical: tuple[CategoricalFeature, ...] = ()
  numeric: tuple[NumericFeature, ...] = ()
  labels: tuple[str, ...] = ("label",)
  user_field: str | None = None
  item_field: str | None = None
  category_field: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "categorical", tuple(self.categorical))
    object.__setattr__(self, "numeric", tuple(self.numeric))
    object.__setattr__(self, "labels", tuple(self.labels))
    names = [f.name for f in self.categorical] + [f.name for f in self.numeric] + list(self.labels)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
      raise ValueError(f"FeatureSpec: duplicated column names {duplicated}")
    if not self.labels:
      raise ValueError("FeatureSpec: at least one label field is required")
    categorical_names = {f.name for f in self.categorical}
    for role in ("user_field", "item_field", "category_field"):
      value = getattr(self, role)
      if value is not None and value not in categorical_names:
        raise ValueError(
            f"FeatureSpec: {role}={value!r} is not one of the categorical fields "
            f"{sorted(categorical_names)}")

  @property
  def label(self) -> str:
    """The default training label (the first label field)."""
    return self.labels[0]

  @property
  def feature_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.categorical) + tuple(f.name for f in self.numeric)

  @property
  def column_names(self) -> tuple[str, ...]:
    return self.feature_names + self.labels

  def categorical_feature(self, name: str) -> CategoricalFeature:
    for f in self.categorical:
      if f.name == name:
        return f
    raise KeyError(f"no categorical feature {name!r}; have {[f.name for f in self.categorical]}")

  def by_tower(self, tower: str) -> tuple[tuple[CategoricalFeature, ...], tuple[NumericFeature, ...]]:
    """The categorical and numeric fields feeding ``tower``."""
    if tower not in TOWERS:
      raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
    return (tuple(f for f in self.categorical if f.tower == tower),
            tuple(f for f in self.numeric if f.tower == tower))

  def validate(self, columns: Mapping[str, Any], *, where: str = "batch") -> None:
    """Checks that concrete ``columns`` hold every field with consistent lengths and ranges.

    Raises:
      ValueError: naming the first missing column, a length mismatch, an id
        outside ``[0, vocab_size)``, or a NaN/inf in a numeric or label column
        (with its row).
    """
    missing = [n for n in self.column_names if n not in columns]
    if missing:
      raise ValueError(f"{where}: missing columns {missing}; have {sorted(columns)}")
    lengths = {n: len(columns[n]) for n in self.column_names}
    if len(set(lengths.values())) > 1:
      raise ValueError(f"{where}: columns differ in length: {lengths}")
    for f in self.categorical:
      values = np.asarray(columns[f.name])
      if values.size and (values.min() < 0 or values.max() >= f.vocab_size):
        raise ValueError(
            f"{where}: column {f.name!r} has ids in [{values.min()}, {values.max()}], "
            f"outside [0, {f.vocab_size})")
    for f in self.numeric:
      shape = np.shape(columns[f.name])
      expected = (shape[0], f.dim) if f.dim > 1 else (shape[0],)
      if shape != expected:
        raise ValueError(f"{where}: numeric column {f.name!r} has shape {shape}, expected {expected}")
    for name, kind in [(f.name, "numeric") for f in self.numeric] + [(n, "label") for n in self.labels]:
      values = np.asarray(columns[name])
      if values.dtype.kind not in "fc" or not values.size:
        continue  # integer and boolean columns cannot hold NaN or inf
      finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
      if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(
            f"{where}: {kind} column {name!r} has {int((~finite).sum())} row(s) with NaN or inf, "
            f"first at row {row} ({values[row]!r}); fill or drop them before training (the "
            "official readers map missing numbers to 0 and count them in info['unknown_values'])")

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable description (stored with checkpoints and results)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
    return cls(
        categorical=tuple(CategoricalFeature(**f) for f in d.get("categorical", ())),
        numeric=tuple(NumericFeature(**f) for f in d.get("numeric", ())),
        labels=tuple(d.get("labels", ("label",))),
        user_field=d.get("user_field"),
        item_field=d.get("item_field"),
        category_field=d.get("category_field"),
    )
