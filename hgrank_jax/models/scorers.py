"""The scorer zoo: two towers and a main network, chosen by name (seed 002 Sec. 3, seed 003).

Every scorer follows the paper's layout: a user tower maps the user fields to
``e_u``, an item tower maps the item fields to ``e_i``, and a *main network*
maps ``(e_u, e_i, context fields)`` to logits. The registry :data:`MAIN_NETWORKS`
names the main networks:

- ``"dnn"``: an MLP over the concatenated inputs.
- ``"wide_deep"``: the MLP plus a wide linear part over the inputs and the
  pairwise element-wise crosses of their low-dimensional projections.
- ``"deepfm"``: first-order linear + factorization-machine second-order term over
  per-field projections to a shared width + an MLP over the same projections.
- ``"dcnv2"``: DCN-v2 cross layers ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``
  (full matrix, or ``U_l V_l^T`` with ``cross_low_rank``) beside an MLP.
- ``"mmoe"``: E expert MLPs mixed by one softmax gate per task, one head per task.

Because the main network only sees tower outputs (never raw ids), the paper's
model can re-run it on the quantised user embedding. An optional shallow bias
tower over ``bias_features`` (e.g. position) adds to the logit in training and
is dropped at serving (seed 004's position tower).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.models.layers import MLP, FieldEmbeddings, Tower


class ScorerOutput(NamedTuple):
  """A scorer's outputs.

  Attributes:
    logits: ``[...]`` float (``[..., num_tasks]`` when num_tasks > 1).
    user_embedding: ``e_u [..., d_u]``.
    item_embedding: ``e_i [..., d_i]``.
  """

  logits: jax.Array
  user_embedding: jax.Array
  item_embedding: jax.Array


class DNNMain(nn.Module):
  """MLP over the concatenated inputs, then a linear logit per task."""

  hidden_layers: Sequence[int] = (256, 128)
  dropout_rate: float = 0.0
  num_tasks: int = 1

  @nn.compact
  def __call__(self, fields: Sequence[jax.Array], *, train: bool = False) -> jax.Array:
    x = MLP(self.hidden_layers, self.dropout_rate)(jnp.concatenate(fields, -1), train=train)
    return nn.Dense(self.num_tasks, name="logit")(x)


class WideDeepMain(nn.Module):
  """Deep MLP plus a wide generalised linear model over inputs and their crosses.

  The crosses are element-wise products of every pair of fields after a linear
  projection to ``wide_cross_dim``; they play the role of Wide & Deep's
  cross-product transformations on dense tower outputs.
  """

  hidden_layers: Sequence[int] = (256, 128)
  dropout_rate: float = 0.0
  wide_cross_dim: int = 8
  num_tasks: int = 1

  @nn.compact
  def __call__(self, fields: Sequence[jax.Array], *, train: bool = False) -> jax.Array:
    x = jnp.concatenate(fields, -1)
    projected = [nn.Dense(self.wide_cross_dim, use_bias=False, name=f"cross_proj_{i}")(f)
                 for i, f in enumerate(fields)]
    crosses = [projected[i] * projected[j]
               for i in range(len(fields)) for j in range(i + 1, len(fields))]
    wide = nn.Dense(self.num_tasks, name="wide")(jnp.concatenate([x] + crosses, -1))
    deep = MLP(self.hidden_layers, self.dropout_rate)(x, train=train)
    return wide + nn.Dense(self.num_tasks, use_bias=False, name="deep_logit")(deep)


class DeepFMMain(nn.Module):
  """First-order + factorization machine + MLP, sharing per-field projections.

  Fields have different widths (the paper's embedding rule), so each is first
  projected to ``fm_dim``; the FM term is ``0.5 * sum_k[(sum_f v_fk)^2 - sum_f v_fk^2]``.
  """

  hidden_layers: Sequence[int] = (256, 128)
  dropout_rate: float = 0.0
  fm_dim: int = 16
  num_tasks: int = 1

  @nn.compact
  def __call__(self, fields: Sequence[jax.Array], *, train: bool = False) -> jax.Array:
    x = jnp.concatenate(fields, -1)
    first_order = nn.Dense(self.num_tasks, name="first_order")(x)
    v = jnp.stack([nn.Dense(self.fm_dim, use_bias=False, name=f"fm_proj_{i}")(f)
                   for i, f in enumerate(fields)], axis=-2)  # [..., F, k]
    second_order = 0.5 * jnp.sum(jnp.sum(v, -2)**2 - jnp.sum(v**2, -2), -1, keepdims=True)
    deep = MLP(self.hidden_layers, self.dropout_rate)(v.reshape(v.shape[:-2] + (-1,)), train=train)
    deep_logit = nn.Dense(self.num_tasks, use_bias=False, name="deep_logit")(deep)
    return first_order + second_order + deep_logit


class DCNv2Main(nn.Module):
  """DCN-v2 (parallel): cross network and MLP side by side, logit over both.

  Attributes:
    num_cross_layers: number of cross layers.
    cross_low_rank: None for full ``d x d`` matrices, else the rank r of ``U V^T``.
  """

  hidden_layers: Sequence[int] = (256, 128)
  dropout_rate: float = 0.0
  num_cross_layers: int = 3
  cross_low_rank: int | None = None
  num_tasks: int = 1

  @nn.compact
  def __call__(self, fields: Sequence[jax.Array], *, train: bool = False) -> jax.Array:
    x0 = jnp.concatenate(fields, -1)
    width = x0.shape[-1]
    x = x0
    for layer in range(self.num_cross_layers):
      if self.cross_low_rank is None:
        mixed = nn.Dense(width, name=f"cross_{layer}")(x)
      else:
        down = nn.Dense(self.cross_low_rank, use_bias=False, name=f"cross_{layer}_v")(x)
        mixed = nn.Dense(width, name=f"cross_{layer}_u")(down)
      x = x0 * mixed + x
    deep = MLP(self.hidden_layers, self.dropout_rate)(x0, train=train)
    return nn.Dense(self.num_tasks, name="logit")(jnp.concatenate([x, deep], -1))


class MMoEMain(nn.Module):
  """Multi-gate mixture of experts: per task, softmax gate over E expert MLPs and a head."""

  num_experts: int = 4
  expert_layers: Sequence[int] = (64,)
  task_layers: Sequence[int] = (32,)
  dropout_rate: float = 0.0
  num_tasks: int = 1

  @nn.compact
  def __call__(self, fields: Sequence[jax.Array], *, train: bool = False) -> jax.Array:
    x = jnp.concatenate(fields, -1)
    experts = jnp.stack(
        [MLP(self.expert_layers, self.dropout_rate, name=f"expert_{e}")(x, train=train)
         for e in range(self.num_experts)], axis=-2)  # [..., E, h]
    logits = []
    for task in range(self.num_tasks):
      gate = jax.nn.softmax(nn.Dense(self.num_experts, name=f"gate_{task}")(x), axis=-1)
      mixed = jnp.einsum("...e,...eh->...h", gate, experts)
      head = MLP(self.task_layers, self.dropout_rate, name=f"head_{task}")(mixed, train=train)
      logits.append(nn.Dense(1, name=f"logit_{task}")(head))
    return jnp.concatenate(logits, -1)


MAIN_NETWORKS = {
    "dnn": DNNMain,
    "wide_deep": WideDeepMain,
    "deepfm": DeepFMMain,
    "dcnv2": DCNv2Main,
    "mmoe": MMoEMain,
}


def check_scorer_name(name: str) -> None:
  """Raises ValueError naming the ``scorer`` argument and the known names."""
  if name not in MAIN_NETWORKS:
    raise ValueError(f"unknown scorer={name!r}; known scorers: {sorted(MAIN_NETWORKS)}")


class Scorer(nn.Module):
  """User tower + item tower + a main network by name (+ optional bias tower).

  Inputs are a batch dict of columns (int ids ``[...]``, float numerics ``[...]``
  or ``[..., dim]``) holding every field of ``spec`` the towers use. Context
  fields go to the main network as separate fields, except ``bias_features``,
  which only feed the shallow bias tower.

  Attributes:
    spec: the feature spec; it needs at least one user and one item field.
    scorer: main network name, one of :data:`MAIN_NETWORKS`.
    hidden_layers, dropout_rate: the main network's MLP (paper: 2-4 layers, 64-512 wide).
    user_tower_layers, item_tower_layers: tower MLPs; () uses the concatenated
      field embeddings as ``e_u`` / ``e_i``.
    wide_cross_dim: ``wide_deep`` cross projection width.
    fm_dim: ``deepfm`` shared field width.
    num_cross_layers, cross_low_rank: ``dcnv2`` cross stack.
    num_experts, expert_layers, task_layers, num_tasks: ``mmoe`` (num_tasks also
      sets the output count of the other scorers).
    bias_features: names of fields for the bias tower; () disables it.
    bias_layers: the bias tower's hidden widths.
  """

  spec: FeatureSpec
  scorer: str = "dnn"
  hidden_layers: Sequence[int] = (256, 128)
  dropout_rate: float = 0.0
  user_tower_layers: Sequence[int] = ()
  item_tower_layers: Sequence[int] = ()
  wide_cross_dim: int = 8
  fm_dim: int = 16
  num_cross_layers: int = 3
  cross_low_rank: int | None = None
  num_experts: int = 4
  expert_layers: Sequence[int] = (64,)
  task_layers: Sequence[int] = (32,)
  num_tasks: int = 1
  bias_features: Sequence[str] = ()
  bias_layers: Sequence[int] = (16,)

  def __post_init__(self):
    check_scorer_name(self.scorer)
    for tower in ("user", "item"):
      categorical, numeric = self.spec.by_tower(tower)
      if not categorical and not numeric:
        raise ValueError(f"Scorer: spec has no {tower!r} fields; the {tower} tower needs one")
    known = set(self.spec.feature_names)
    unknown = [name for name in self.bias_features if name not in known]
    if unknown:
      raise ValueError(f"Scorer: bias_features {unknown} are not fields of spec: {sorted(known)}")
    for name in ("num_tasks", "num_experts", "num_cross_layers", "fm_dim", "wide_cross_dim"):
      if getattr(self, name) < (0 if name == "num_cross_layers" else 1):
        raise ValueError(f"Scorer: {name} must be positive, got {getattr(self, name)!r}")
    if self.cross_low_rank is not None and self.cross_low_rank < 1:
      raise ValueError(f"Scorer: cross_low_rank must be None or >= 1, got {self.cross_low_rank!r}")
    super().__post_init__()

  def _fields(self, tower: str):
    categorical, numeric = self.spec.by_tower(tower)
    bias = set(self.bias_features)
    return (tuple(f for f in categorical if f.name not in bias),
            tuple(f for f in numeric if f.name not in bias))

  def setup(self):
    self.user_tower = Tower(*self._fields("user"), layers=tuple(self.user_tower_layers),
                            dropout_rate=self.dropout_rate)
    self.item_tower = Tower(*self._fields("item"), layers=tuple(self.item_tower_layers),
                            dropout_rate=self.dropout_rate)
    self.context_fields = FieldEmbeddings(*self._fields("context"))
    common = dict(dropout_rate=self.dropout_rate, num_tasks=self.num_tasks)
    if self.scorer == "mmoe":
      kwargs = dict(num_experts=self.num_experts, expert_layers=tuple(self.expert_layers),
                    task_layers=tuple(self.task_layers))
    else:
      kwargs = dict(hidden_layers=tuple(self.hidden_layers))
      kwargs.update({"wide_deep": dict(wide_cross_dim=self.wide_cross_dim),
                     "deepfm": dict(fm_dim=self.fm_dim),
                     "dcnv2": dict(num_cross_layers=self.num_cross_layers,
                                   cross_low_rank=self.cross_low_rank)}.get(self.scorer, {}))
    self.main_network = MAIN_NETWORKS[self.scorer](**common, **kwargs)
    if self.bias_features:
      categorical = tuple(f for f in self.spec.categorical if f.name in self.bias_features)
      numeric = tuple(f for f in self.spec.numeric if f.name in self.bias_features)
      self.bias_fields = FieldEmbeddings(categorical, numeric)
      self.bias_mlp = MLP(tuple(self.bias_layers))
      self.bias_logit_layer = nn.Dense(self.num_tasks)

  def encode(self, batch, *, train: bool = False):
    """Returns ``(e_u [..., d_u], e_i [..., d_i], context fields)``."""
    return (self.user_tower(batch, train=train), self.item_tower(batch, train=train),
            tuple(self.context_fields(batch)))

  def main(self, user_embedding, item_embedding, context=(), *, train: bool = False):
    """The main network: ``[..., num_tasks]`` logits from the tower outputs."""
    if user_embedding.shape[:-1] != item_embedding.shape[:-1]:
      raise ValueError(f"Scorer.main: user_embedding {user_embedding.shape} and item_embedding "
                       f"{item_embedding.shape} differ in their leading axes")
    return self.main_network([user_embedding, item_embedding, *context], train=train)

  def bias_logit(self, batch, *, train: bool = False):
    """The bias tower's ``[..., num_tasks]`` logit (zeros without bias features)."""
    if not self.bias_features:
      return jnp.zeros(())
    x = jnp.concatenate(self.bias_fields(batch), -1)
    return self.bias_logit_layer(self.bias_mlp(x, train=train))

  def squeeze(self, logits):
    """``[..., 1]`` -> ``[...]`` for a single task; several tasks stay ``[..., T]``."""
    return logits[..., 0] if self.num_tasks == 1 else logits

  def __call__(self, batch, *, train: bool = False, use_bias_tower: bool | None = None):
    """Scores a batch.

    Args:
      batch: dict of columns with leading shape ``[...]``.
      train: enables dropout (needs a ``"dropout"`` rng when dropout_rate > 0).
      use_bias_tower: add the bias logit; None means "in training only".

    Returns:
      :class:`ScorerOutput`.
    """
    user_embedding, item_embedding, context = self.encode(batch, train=train)
    logits = self.main(user_embedding, item_embedding, context, train=train)
    if self.bias_features:
      use = train if use_bias_tower is None else use_bias_tower
      if self.is_initializing() and not use:
        self.bias_logit(batch, train=train)  # create its parameters even when serving
      elif use:
        logits = logits + self.bias_logit(batch, train=train)
    return ScorerOutput(self.squeeze(logits), user_embedding, item_embedding)


def make_scorer(name: str, spec: FeatureSpec, **kwargs) -> Scorer:
  """The scorer registered as ``name`` for ``spec``; kwargs are :class:`Scorer` fields."""
  check_scorer_name(name)
  return Scorer(spec=spec, scorer=name, **kwargs)
