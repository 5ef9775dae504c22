"""The paper's Hierarchical Group-wise Ranking model and its loss (seed 002, Sec. 5, Eq. 10-11).

:class:`HGRModel` wraps a :class:`~hgrank_jax.models.scorers.Scorer`: the primary
logit is ``s = main(e_u, e_i)``; the user embedding is quantised by a
:class:`~hgrank_jax.models.rvq.ResidualVQ` into ``e_u^q`` (straight-through) and
hierarchical codes; the auxiliary logit is ``s^q = main(e_u^q, stop_gradient(e_i))``
with the main network's parameters also behind ``stop_gradient`` by default, so
that only the user tower learns from the auxiliary loss. :func:`hgr_loss` is
Eq. 10: ``logloss(s) + lambda * logloss(s^q) + group_ce(s, codes, log_sigma)``.
At serving only ``s`` is used (:meth:`HGRModel.serve`), without the bias tower.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgrank_jax.data.features import FeatureSpec
from hgrank_jax.models.rvq import RVQ_COLLECTION, ResidualVQ
from hgrank_jax.models.scorers import Scorer, check_scorer_name


class HGROutput(NamedTuple):
  """What :class:`HGRModel` returns (leading shape ``[...]`` of the batch).

  Attributes:
    logits: ``[...]`` primary logit ``s`` (plus the bias logit in training).
    quantized_logits: ``[...]`` auxiliary logit ``s^q`` from ``e_u^q``.
    codes: ``[..., L]`` int32 hierarchical user codes.
    log_sigma: ``[L]`` learned ``log sigma_l`` of Eq. 9.
    user_embedding: ``[..., d_u]`` ``e_u``.
    stats: the quantiser's per-level statistics (dict of ``[L]`` arrays).
  """

  logits: jax.Array
  quantized_logits: jax.Array
  codes: jax.Array
  log_sigma: jax.Array
  user_embedding: jax.Array
  stats: dict[str, jax.Array]


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
               update_codebooks: bool | None = None) -> HGROutput:
    """Primary and auxiliary logits, codes and statistics for a batch.

    Args:
      batch: dict of columns with leading shape ``[...]``.
      train: dropout on, bias tower added, codebooks updated (when "rvq" is mutable).
      where: optional ``[...]`` bool mask of valid (non-padded) rows.
      update_codebooks: override whether the EMA state advances; None means
        ``train`` and the ``"rvq"`` collection being mutable.

    Returns:
      :class:`HGROutput`.
    """
    scorer = self.scorer
    user_embedding, item_embedding, context = scorer.encode(batch, train=train)
    logits = scorer.main(user_embedding, item_embedding, context, train=train)
    bias = jnp.zeros(())
    if scorer.bias_features and (train or self.is_initializing()):
      bias = scorer.bias_logit(batch, train=train)
      bias = bias if train else jnp.zeros_like(bias)
    if update_codebooks is None:
      update_codebooks = (train and self.is_mutable_collection(RVQ_COLLECTION)
                          and not self.is_initializing())
    quantized = self.quantizer(user_embedding, where=where, update=update_codebooks)

    # The auxiliary path: only the user tower may learn from it (paper Sec. 5).
    frozen_item = jax.lax.stop_gradient(item_embedding)
    frozen_context = tuple(jax.lax.stop_gradient(c) for c in context)
    if self.aux_updates_main_net:
      quantized_logits = scorer.main(quantized.quantized, frozen_item, frozen_context, train=train)
    else:
      frozen_main = nn.map_variables(
          lambda module, *args: module.scorer.main(*args, train=train), "params",
          trans_in_fn=jax.lax.stop_gradient, init=self.is_initializing())
      quantized_logits = frozen_main(self, quantized.quantized, frozen_item, frozen_context)
    quantized_logits = quantized_logits + jax.lax.stop_gradient(bias)
    return HGROutput(
        logits=scorer.squeeze(logits + bias),
        quantized_logits=scorer.squeeze(quantized_logits),
        codes=quantized.codes,
        log_sigma=self.log_sigma,
        user_embedding=user_embedding,
        stats=quantized.stats)

  def serve(self, batch) -> jax.Array:
    """Serving logits ``[...]``: the primary path only, no bias tower, no quantiser."""
    return self.scorer(batch, train=False, use_bias_tower=False).logits


def make_hgr_model(spec: FeatureSpec, scorer: str = "dnn", *, num_levels: int = 3,
                   codebook_size: int = 8, aux_updates_main_net: bool = False,
                   decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 1.0,
                   dead_code_reset_count: float | None = None, kmeans_init: bool = True,
                   log_sigma_init: float = 0.0, **scorer_kwargs) -> HGRModel:
  """An :class:`HGRModel` over the named scorer; ``scorer_kwargs`` are :class:`Scorer` fields."""
  check_scorer_name(scorer)
  return HGRModel(
      scorer=Scorer(spec=spec, scorer=scorer, **scorer_kwargs), num_levels=num_levels,
      codebook_size=codebook_size, decay=decay, eps=eps, dead_code_threshold=dead_code_threshold,
      dead_code_reset_count=dead_code_reset_count, kmeans_init=kmeans_init,
      aux_updates_main_net=aux_updates_main_net, log_sigma_init=log_sigma_init)


def hgr_loss(output: HGROutput, labels: jax.Array, *, where: jax.Array | None = None,
             aux_weight: float = 1.0, hierarchical_weight: float = 1.0,
             codebook_size: int | None = None):
  """Eq. 10: ``logloss(s) + aux_weight * logloss(s^q) + hierarchical_weight * group_ce(s)``.

  The hierarchical term (Eq. 9) groups rows by code prefixes of every level and
  uses the primary logit ``s`` and the learned ``log_sigma``. Setting a weight
  to 0 gives the paper's ablations (Table 3).

  Args:
    output: :class:`HGROutput` of the batch.
    labels: ``[...]`` float labels in [0, 1].
    where: optional ``[...]`` bool mask of valid rows.
    aux_weight: lambda of Eq. 10 (default 1.0).
    hierarchical_weight: weight of the group-wise term (1.0 in Eq. 10).
    codebook_size: K of the codes, when known; lets the grouping count rows into
      a ``K^l`` table instead of sorting the batch (same loss, faster).

  Returns:
    ``(loss, terms)``: scalar loss and a dict with ``logloss``, ``aux_logloss``
    and ``group_ce``.
  """
  # Imported here so that the models package does not depend on losses at import time.
  from hgrank_jax import losses  # pylint: disable=g-import-not-at-top

  labels = jnp.asarray(labels, jnp.float32)
  if labels.shape != output.logits.shape:
    raise ValueError(f"hgr_loss: labels have shape {labels.shape}, logits {output.logits.shape}")
  terms = {
      "logloss": losses.logloss(output.logits, labels, where=where),
      "aux_logloss": losses.logloss(output.quantized_logits, labels, where=where),
      "group_ce": losses.group_ce(output.logits, labels, codes=output.codes,
                                  log_sigma=output.log_sigma, where=where,
                                  codebook_size=codebook_size),
  }
  loss = (terms["logloss"] + aux_weight * terms["aux_logloss"]
          + hierarchical_weight * terms["group_ce"])
  return loss, terms
