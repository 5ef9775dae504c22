"""Building blocks shared by the scorers: MLPs, feature embeddings and towers.

A *tower* turns the columns of a batch that a :class:`~hgrank_jax.data.features.FeatureSpec`
assigns to it ("user", "item" or "context") into vectors: categorical ids are
embedded with the paper's width rule (``CategoricalFeature.dim``) and numeric
columns are used as they are. The user and item towers concatenate their fields
into one embedding (``e_u``, ``e_i``), optionally followed by an MLP; the context
fields stay separate so that field-wise interaction layers (FM) can use them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgrank_jax.data.features import CategoricalFeature, NumericFeature

# Small initial embeddings keep early logits near 0 (calibrated at the base rate).
EMBEDDING_INIT = nn.initializers.normal(stddev=0.05)


class MLP(nn.Module):
  """Dense layers with ReLU and optional dropout.

  Attributes:
    features: widths of the layers, in order.
    dropout_rate: dropout after each hidden activation (only when ``train``).
    activate_last: apply ReLU (and dropout) after the last layer too; False makes
      the last layer linear, e.g. for an embedding or a logit.
  """

  features: Sequence[int]
  dropout_rate: float = 0.0
  activate_last: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """``x [..., d_in]`` float -> ``[..., features[-1]]`` (``x`` itself if no layers)."""
    for index, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{index}")(x)
      if index < len(self.features) - 1 or self.activate_last:
        x = nn.relu(x)
        if self.dropout_rate > 0:
          x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


def _column(batch: Mapping[str, jax.Array], name: str, where: str) -> jax.Array:
  if name not in batch:
    raise KeyError(f"{where}: batch has no column {name!r}; columns are {sorted(batch)}")
  return jnp.asarray(batch[name])


class FieldEmbeddings(nn.Module):
  """Embeds categorical fields and passes numeric fields through, one vector per field.

  Attributes:
    categorical: the categorical fields, each embedded to ``field.dim``.
    numeric: the numeric fields; a ``[...]`` column becomes ``[..., 1]``.
  """

  categorical: Sequence[CategoricalFeature] = ()
  numeric: Sequence[NumericFeature] = ()

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array]) -> list[jax.Array]:
    """Returns a list of float32 ``[..., dim_f]`` arrays, categorical fields first."""
    fields = []
    for feature in self.categorical:
      ids = _column(batch, feature.name, type(self).__name__)
      table = nn.Embed(feature.vocab_size, feature.dim, embedding_init=EMBEDDING_INIT,
                       name=f"embed_{feature.name}")
      fields.append(table(ids.astype(jnp.int32)))
    for feature in self.numeric:
      values = _column(batch, feature.name, type(self).__name__).astype(jnp.float32)
      if feature.dim > 1 and (values.ndim == 0 or values.shape[-1] != feature.dim):
        raise ValueError(f"{type(self).__name__}: numeric column {feature.name!r} has shape "
                         f"{values.shape}, expected [..., {feature.dim}]")
      fields.append(values[..., None] if feature.dim == 1 else values)
    return fields


class Tower(nn.Module):
  """One tower: its fields concatenated, then an optional MLP with a linear last layer.

  Attributes:
    categorical, numeric: the fields of this tower.
    layers: MLP widths; () returns the concatenated field vectors as they are.
    dropout_rate: dropout between hidden layers.
  """

  categorical: Sequence[CategoricalFeature] = ()
  numeric: Sequence[NumericFeature] = ()
  layers: Sequence[int] = ()
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
    """Returns ``[..., d]`` float32 with ``d = layers[-1]`` or the sum of field widths."""
    fields = FieldEmbeddings(self.categorical, self.numeric, name="fields")(batch)
    x = jnp.concatenate(fields, axis=-1)
    # The last layer stays linear so that the embedding (e.g. e_u for the RVQ) is unconstrained.
    return MLP(self.layers, self.dropout_rate, activate_last=False, name="mlp")(x, train=train)


def tower_width(categorical: Sequence[CategoricalFeature], numeric: Sequence[NumericFeature],
                layers: Sequence[int]) -> int:
  """The output width of a :class:`Tower` with these fields and layers."""
  if layers:
    return int(layers[-1])
  return sum(f.dim for f in categorical) + sum(f.dim for f in numeric)
