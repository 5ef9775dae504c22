"""The paper's Hierarchical Group-wise Ranking model and its loss (seed 002, Sec. 5, Eq. 10-11).

:class:`HGRModel` wraps a :class:`~hgrank_jax.models.scorers.Scorer`: the primary
logit is ``s = main(e_u, e_i)``; the user embedding is quantised by a
:class:`~hgrank_jax.models.rvq.ResidualVQ` into ``e_u^q`` (straight-through) and
hierarchical codes; the auxiliary logit is ``s^q = main(e_u^q, stop_gradient(e_i))``
with the main network's parameters also behind ``stop_gradient`` by default, so
that only the user tower learns from the auxiliary loss. On accelerators both
logits come from one application of the main network to the ``2n`` rows
``[e_u; e_u^q]``, whose dense layers then take their parameter gradients from
the first ``n`` rows only (:func:`primary_rows_dense`): the same gradient as
two passes with the second one's parameters frozen, which is what runs on the
CPU (``HGRModel.batched_aux``). :func:`hgr_loss` is
Eq. 10: ``logloss(s) + lambda * logloss(s^q) + group_ce(s, codes, log_sigma)``;
with ``lambda = 0`` the auxiliary pass is skipped (``with_aux=False``). At
serving only ``s`` is used (:meth:`HGRModel.serve`), without the bias tower.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgrank_jax import losses
from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.models.rvq import RVQ_COLLECTION, ResidualVQ
from hgrank_jax.models.scorers import Scorer, check_scorer_name


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _primary_rows_dense(x, kernel, bias, num_primary):
  return _dense(x, kernel, bias)


def _dense(x, kernel, bias):
  # As flax.linen.Dense computes it (no dtype or precision overrides).
  y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  if bias is not None:
    y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
  return y


def _primary_rows_dense_fwd(x, kernel, bias, num_primary):
  return _dense(x, kernel, bias), (x, kernel, bias is None)


def _primary_rows_dense_bwd(num_primary, residuals, dy):
  x, kernel, no_bias = residuals
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  batch_axes = tuple(range(x.ndim - 1))
  x_primary, dy_primary = x[:num_primary], dy[:num_primary]
  dkernel = jax.lax.dot_general(x_primary, dy_primary, ((batch_axes, batch_axes), ((), ())))
  dbias = None if no_bias else jnp.sum(dy_primary, axis=batch_axes)
  return dx, dkernel, dbias


_primary_rows_dense.defvjp(_primary_rows_dense_fwd, _primary_rows_dense_bwd)


def primary_rows_dense(num_primary: int):
  """A Flax method interceptor: dense layers whose parameters learn from the first rows only.

  Inside ``with nn.intercept_methods(primary_rows_dense(n)):`` every
  ``nn.Dense`` computes ``y = x W + b`` on all rows as usual and passes the
  gradient on to all of ``x``, but its parameter gradients are
  ``dW = x[:n]^T dy[:n]`` and ``db = sum(dy[:n])``: rows ``n:`` act as if
  ``W`` and ``b`` were behind ``stop_gradient``. All parameters of the main
  networks of :mod:`hgrank_jax.models.scorers` are ``nn.Dense`` kernels and
  biases, so a main network applied to ``[e_u; e_u^q]`` gives the gradients
  of ``main(e_u)`` plus ``main_frozen(e_u^q)`` in one batched pass.

  Args:
    num_primary: static number of leading rows (axis 0) that train the parameters.

  Returns:
    The interceptor.

  >>> import flax.linen as nn, jax, jax.numpy as jnp
  >>> layer = nn.Dense(1, use_bias=False)
  >>> w = {"params": {"kernel": jnp.ones((1, 1))}}
  >>> def loss(w):
  ...   with nn.intercept_methods(primary_rows_dense(1)):
  ...     return jnp.sum(layer.apply(w, jnp.array([[2.], [3.]])))
  >>> float(jax.grad(loss)(w)["params"]["kernel"][0, 0])  # row 0 only: 2, not 5
  2.0
  """
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (not isinstance(module, nn.Dense) or context.method_name != "__call__"
        or module.is_initializing()):
      return next_fun(*args, **kwargs)
    if (module.dtype is not None or module.precision is not None
        or module.dot_general is not None or module.dot_general_cls is not None):
      raise NotImplementedError(
          "primary_rows_dense: nn.Dense with dtype, precision or dot_general overrides "
          f"({module.name}) is not supported")
    (x,) = args
    kernel = module.get_variable("params", "kernel")
    bias = module.get_variable("params", "bias") if module.use_bias else None
    x = jnp.asarray(x, jnp.promote_types(x.dtype, kernel.dtype))
    return _primary_rows_dense(x, kernel, bias, num_primary)

  return interceptor


class HGROutput(NamedTuple):
  """What :class:`HGRModel` returns (leading shape ``[...]`` of the batch).

  Attributes:
    logits: ``[...]`` primary logit ``s`` (plus the bias logit in training).
    quantized_logits: ``[...]`` auxiliary logit ``s^q`` from ``e_u^q`` (None
      when the model was applied with ``with_aux=False``).
    codes: ``[..., L]`` int32 hierarchical user codes.
    log_sigma: ``[L]`` learned ``log sigma_l`` of Eq. 9.
    user_embedding: ``[..., d_u]`` ``e_u``.
    stats: the quantiser's per-level statistics (dict of ``[L]`` arrays).
    group_ids: ``[L, rows]`` code-prefix group ids of the flattened rows
      (masked rows ``rows``), found once by the quantiser and reused by
      :func:`hgr_loss`; None when the codes were replaced.
  """

  logits: jax.Array
  quantized_logits: jax.Array | None
  codes: jax.Array
  log_sigma: jax.Array
  user_embedding: jax.Array
  stats: dict[str, jax.Array]
  group_ids: jax.Array | None = None


class HGRModel(nn.Module):
  """Scorer + residual VQ of ``e_u`` + auxiliary quantised path (the paper's model).

  Apply in training with ``mutable=["rvq"]`` (the codebook state) and
  ``train=True``; pass ``where`` so that padded rows do not move the codebooks.

  Attributes:
    scorer: the scorer (towers + main network); needs ``num_tasks == 1``.
    num_levels: L, code levels (paper grid 1-4).
    codebook_size: K, codes per level (paper grid 4-32).
    decay, eps, dead_code_threshold, dead_code_reset_count, kmeans_init: passed
      to :class:`ResidualVQ`.
    aux_updates_main_net: let the auxiliary loss train the main network too
      (False: its parameters are behind stop_gradient on the ``s^q`` path).
    log_sigma_init: initial ``log sigma_l`` (0 weighs each level by 1/2).
    batched_aux: run the primary and auxiliary passes of the main network as
      one pass over ``2n`` rows (fewer, larger kernels: faster on accelerators)
      or as two passes (faster on CPUs, where the doubled activations fall out
      of cache); None picks batched except on the CPU backend. Same values and
      gradients either way.
  """

  scorer: Scorer
  num_levels: int = 3
  codebook_size: int = 8
  decay: float = 0.99
  eps: float = 1e-5
  dead_code_threshold: float = 1.0
  dead_code_reset_count: float | None = None
  kmeans_init: bool = True
  aux_updates_main_net: bool = False
  log_sigma_init: float = 0.0
  batched_aux: bool | None = None

  def __post_init__(self):
    if not isinstance(self.scorer, Scorer):
      raise ValueError(
          f"HGRModel: scorer must be a Scorer module, got {type(self.scorer).__name__}")
    for name in ("num_levels", "codebook_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"HGRModel: {name} must be an int >= 1, got {value!r}")
    if self.scorer.num_tasks != 1:
      raise ValueError(f"HGRModel: scorer.num_tasks must be 1, got {self.scorer.num_tasks}")
    super().__post_init__()

  def setup(self):
    self.quantizer = ResidualVQ(
        num_levels=self.num_levels, codebook_size=self.codebook_size, decay=self.decay,
        eps=self.eps, dead_code_threshold=self.dead_code_threshold,
        dead_code_reset_count=self.dead_code_reset_count, kmeans_init=self.kmeans_init)
    self.log_sigma = self.param("log_sigma", nn.initializers.constant(self.log_sigma_init),
                                (self.num_levels,), jnp.float32)

  def __call__(self, batch, *, train: bool = False, where: jax.Array | None = None,
               update_codebooks: bool | None = None, with_aux: bool = True) -> HGROutput:
    """Primary and auxiliary logits, codes and statistics for a batch.

    Args:
      batch: dict of columns with leading shape ``[...]``.
      train: dropout on, bias tower added, codebooks updated (when "rvq" is mutable).
      where: optional ``[...]`` bool mask of valid (non-padded) rows.
      update_codebooks: override whether the EMA state advances; None means
        ``train`` and the ``"rvq"`` collection being mutable.
      with_aux: compute the auxiliary logit ``s^q``; False skips that half of
        the main network's work (for a loss whose auxiliary weight is 0).

    Returns:
      :class:`HGROutput`.
    """
    scorer = self.scorer
    user_embedding, item_embedding, context = scorer.encode(batch, train=train)
    bias = jnp.zeros(())
    if scorer.bias_features and (train or self.is_initializing()):
      bias = scorer.bias_logit(batch, train=train)
      bias = bias if train else jnp.zeros_like(bias)
    if update_codebooks is None:
      update_codebooks = (train and self.is_mutable_collection(RVQ_COLLECTION)
                          and not self.is_initializing())
    quantized = self.quantizer(user_embedding, where=where, update=update_codebooks)

    if with_aux or self.is_initializing():
      logits, quantized_logits = self._primary_and_auxiliary(
          user_embedding, quantized.quantized, item_embedding, context, train)
      quantized_logits = scorer.squeeze(quantized_logits + jax.lax.stop_gradient(bias))
    else:
      logits = scorer.main(user_embedding, item_embedding, context, train=train)
      quantized_logits = None
    return HGROutput(
        logits=scorer.squeeze(logits + bias),
        quantized_logits=quantized_logits,
        codes=quantized.codes,
        log_sigma=self.log_sigma,
        user_embedding=user_embedding,
        stats=quantized.stats,
        group_ids=quantized.group_ids)

  def _primary_and_auxiliary(self, user, quantized_user, item, context, train):
    """``main(e_u, e_i)`` and ``main(e_u^q, sg(e_i))``: one pass over ``2n`` rows, or two.

    The auxiliary rows see the item and context embeddings behind
    ``stop_gradient`` (paper Sec. 5: only the user tower learns from the
    auxiliary loss) and, unless ``aux_updates_main_net``, give the main
    network's parameters no gradient (:func:`primary_rows_dense`).
    """
    batched = self.batched_aux
    if batched is None:
      batched = jax.default_backend() != "cpu"
    frozen_item = jax.lax.stop_gradient(item)
    frozen_context = tuple(jax.lax.stop_gradient(c) for c in context)
    if not batched:
      logits = self.scorer.main(user, item, context, train=train)
      if self.aux_updates_main_net:
        return logits, self.scorer.main(quantized_user, frozen_item, frozen_context, train=train)
      frozen_main = nn.map_variables(
          lambda module, *args: module.scorer.main(*args, train=train), "params",
          trans_in_fn=jax.lax.stop_gradient, init=self.is_initializing())
      return logits, frozen_main(self, quantized_user, frozen_item, frozen_context)
    lead = user.shape[:-1]
    n = math.prod(lead)
    rows = lambda x: x.reshape((n,) + x.shape[len(lead):])
    stacked = lambda x, frozen: jnp.concatenate([rows(x), rows(frozen)], axis=0)
    users = stacked(user, quantized_user)
    items = stacked(item, frozen_item)
    contexts = tuple(stacked(c, frozen) for c, frozen in zip(context, frozen_context))
    if self.aux_updates_main_net:
      both = self.scorer.main(users, items, contexts, train=train)
    else:
      with nn.intercept_methods(primary_rows_dense(n)):
        both = self.scorer.main(users, items, contexts, train=train)
    unstack = lambda x: x.reshape(lead + x.shape[1:])
    return unstack(both[:n]), unstack(both[n:])

  def serve(self, batch) -> jax.Array:
    """Serving logits ``[...]``: the primary path only, no bias tower, no quantiser."""
    return self.scorer(batch, train=False, use_bias_tower=False).logits


def make_hgr_model(spec: FeatureSpec, scorer: str = "dnn", *, num_levels: int = 3,
                   codebook_size: int = 8, aux_updates_main_net: bool = False,
                   decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 1.0,
                   dead_code_reset_count: float | None = None, kmeans_init: bool = True,
                   log_sigma_init: float = 0.0, batched_aux: bool | None = None,
                   **scorer_kwargs) -> HGRModel:
  """An :class:`HGRModel` over the named scorer; ``scorer_kwargs`` are :class:`Scorer` fields."""
  check_scorer_name(scorer)
  return HGRModel(
      scorer=Scorer(spec=spec, scorer=scorer, **scorer_kwargs), num_levels=num_levels,
      codebook_size=codebook_size, decay=decay, eps=eps, dead_code_threshold=dead_code_threshold,
      dead_code_reset_count=dead_code_reset_count, kmeans_init=kmeans_init,
      aux_updates_main_net=aux_updates_main_net, log_sigma_init=log_sigma_init,
      batched_aux=batched_aux)


def hgr_loss(output: HGROutput, labels: jax.Array, *, where: jax.Array | None = None,
             aux_weight: float = 1.0, hierarchical_weight: float = 1.0,
             codebook_size: int | None = None):
  """Eq. 10: ``logloss(s) + aux_weight * logloss(s^q) + hierarchical_weight * group_ce(s)``.

  The hierarchical term (Eq. 9) groups rows by code prefixes of every level and
  uses the primary logit ``s`` and the learned ``log_sigma``; the groups are
  ``output.group_ids`` when the quantiser found them (the same groups as the
  codes give, found once). Setting a weight to 0 gives the paper's ablations
  (Table 3); with ``aux_weight == 0`` the auxiliary term is not computed (the
  output may come from ``with_aux=False``) and ``aux_logloss`` is not reported.

  Args:
    output: :class:`HGROutput` of the batch.
    labels: ``[...]`` float labels in [0, 1].
    where: optional ``[...]`` bool mask of valid rows; the quantiser must have
      been given the same mask when ``output.group_ids`` is set.
    aux_weight: lambda of Eq. 10 (default 1.0).
    hierarchical_weight: weight of the group-wise term (1.0 in Eq. 10).
    codebook_size: K of the codes, when known; lets the grouping count rows into
      a ``K^l`` table instead of sorting the batch (same loss, faster).

  Returns:
    ``(loss, terms)``: scalar loss and a dict with ``logloss``, ``aux_logloss``
    (unless ``aux_weight == 0``) and ``group_ce``.

  >>> import jax.numpy as jnp
  >>> out = HGROutput(logits=jnp.zeros(4), quantized_logits=None,
  ...                 codes=jnp.array([[0, 0], [0, 1], [1, 0], [1, 0]]), log_sigma=jnp.zeros(2),
  ...                 user_embedding=jnp.zeros((4, 1)), stats={})
  >>> loss, terms = hgr_loss(out, jnp.array([1., 0., 1., 0.]), aux_weight=0.0)
  >>> sorted(terms), round(float(loss), 4)  # log 2 + (0.6931 + 0.2310) / 2
  (['group_ce', 'logloss'], 1.1552)
  """
  labels = jnp.asarray(labels, jnp.float32)
  if labels.shape != output.logits.shape:
    raise ValueError(f"hgr_loss: labels have shape {labels.shape}, logits {output.logits.shape}")
  skip_aux = isinstance(aux_weight, (int, float)) and aux_weight == 0
  if not skip_aux and output.quantized_logits is None:
    raise ValueError("hgr_loss: aux_weight is not 0 but the output has no quantized_logits "
                     "(apply the model with with_aux=True)")
  terms = {"logloss": losses.logloss(output.logits, labels, where=where)}
  if not skip_aux:
    terms["aux_logloss"] = losses.logloss(output.quantized_logits, labels, where=where)
  terms["group_ce"] = losses.group_ce(output.logits, labels, codes=output.codes,
                                      log_sigma=output.log_sigma, where=where,
                                      codebook_size=codebook_size, group_ids=output.group_ids)
  loss = terms["logloss"]
  if not skip_aux:
    loss = loss + aux_weight * terms["aux_logloss"]
  return loss + hierarchical_weight * terms["group_ce"], terms
