"""Residual vector quantisation of user embeddings with EMA codebooks (seed 002, Sec. 5.1).

This module holds :class:`ResidualVQ`, a Flax linen module that turns embeddings
``[..., d]`` into hierarchical codes ``[..., L]``: level ``l`` picks the nearest of
``K`` codewords to the residual left by levels ``1..l-1`` (Eq. 5) and the
quantised vector is the sum of the picked codewords (Eq. 6), returned through a
straight-through estimator (Eq. 11). Codebooks are not trained by gradients: they
follow exponential moving averages of assignment counts ``N`` and residual sums
``S`` with Laplace-smoothed counts, dead codes are re-seeded from the current
batch, and an optional k-means pass initialises them from the first batch. All of
that state lives in the ``"rvq"`` variable collection, so ``apply`` stays pure:
pass ``mutable=["rvq"]`` to get the updated state back.

The pure codebook operations it is built from live in
:mod:`hgrank_jax.models.codebooks`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgrank_jax.models.codebooks import (assignment_sums, ema_update, kmeans, nearest_code,
                                         replace_dead_codes, residual_cascade)
from hgrank_jax.ops.group_ids import code_prefix_ids

RVQ_COLLECTION = "rvq"


class RVQOutput(NamedTuple):
  """What :class:`ResidualVQ` returns.

  Attributes:
    quantized: ``[..., d]`` float, equal to the sum of the chosen codewords in the
      forward pass and with the identity as Jacobian w.r.t. the input (Eq. 11).
    codes: ``[..., L]`` int32 in ``[0, K)``, the code of each level.
    stats: dict of ``[L]`` arrays over the valid rows of the batch:
      ``perplexity`` (exp of the entropy of code usage; NaN without valid rows),
      ``dead_fraction`` (share of codes whose EMA count is below the threshold,
      before they are re-seeded), ``occupied_prefixes`` (distinct code prefixes
      ``c_1..c_l``), ``mean_group_size`` (valid rows per occupied prefix) and
      ``residual_sq_norm`` (mean squared norm of the residual left after level l).
    group_ids: ``[L, n]`` int32 over the ``n`` flattened rows: the dense id of
      each valid row's code prefix ``c_1..c_l`` at every level (the groups of
      Eq. 8-9, as :func:`hgrank_jax.ops.group_ids.code_prefix_ids` numbers
      them), ``n`` for masked rows. Found once for the statistics, so that the
      GroupCE loss can reuse them.
  """

  quantized: jax.Array
  codes: jax.Array
  stats: dict[str, jax.Array]
  group_ids: jax.Array | None = None


class ResidualVQ(nn.Module):
  """L-level residual quantiser with EMA codebooks, dead-code expiry and STE.

  Call with ``x [..., d]`` and an optional ``where [...]`` bool mask; padded rows
  (``where == False``) are quantised but never update codebooks or statistics.
  State (collection ``"rvq"``): ``codebook [L, K, d]``, ``ema_count [L, K]``,
  ``ema_sum [L, K, d]``, ``initialized`` (a batch with valid rows has been seen,
  so k-means has run if enabled) and ``step``. Codebooks
  start from N(0, init_scale^2) with count 1 and ``S = C``.

  Attributes:
    num_levels: L >= 1.
    codebook_size: K >= 1.
    decay: EMA decay m in [0, 1) (paper: m; default 0.99).
    eps: Laplace smoothing constant > 0.
    dead_code_threshold: codes with EMA count below it are re-seeded from the
      batch (counts are per batch, in rows); 0 disables expiry.
    dead_code_reset_count: count a re-seeded code restarts from; None uses
      ``max(dead_code_threshold, 1)``.
    kmeans_init: run k-means on the first updating batch to set the codebooks
      (SoundStream's initialisation, which the paper follows for expiry).
    kmeans_iters: Lloyd iterations of that initialisation.
    init_scale: standard deviation of the random initial codewords.
    seed: seeds the sampling of re-seeded codes when no ``"rvq"`` rng is given.
    reseed_behind_cond: run the dead-code sampling only on steps with a dead
      code (a ``lax.cond``: cheaper on a CPU) or on every step (it changes
      nothing without a dead code; on an accelerator this avoids the branch's
      round trip to the host). None picks the cond on the CPU backend only.
      Same results either way.
  """

  num_levels: int
  codebook_size: int
  decay: float = 0.99
  eps: float = 1e-5
  dead_code_threshold: float = 1.0
  dead_code_reset_count: float | None = None
  kmeans_init: bool = True
  kmeans_iters: int = 10
  init_scale: float = 1.0
  seed: int = 0
  reseed_behind_cond: bool | None = None

  def __post_init__(self):
    for name in ("num_levels", "codebook_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"ResidualVQ: {name} must be an int >= 1, got {value!r}")
    if not 0.0 <= self.decay < 1.0:
      raise ValueError(f"ResidualVQ: decay must be in [0, 1), got {self.decay!r}")
    if not self.eps > 0:
      raise ValueError(f"ResidualVQ: eps must be > 0, got {self.eps!r}")
    if not self.dead_code_threshold >= 0:
      raise ValueError(
          f"ResidualVQ: dead_code_threshold must be >= 0, got {self.dead_code_threshold!r}")
    if self.kmeans_iters < 0:
      raise ValueError(f"ResidualVQ: kmeans_iters must be >= 0, got {self.kmeans_iters!r}")
    super().__post_init__()

  def _reset_count(self) -> float:
    if self.dead_code_reset_count is not None:
      return float(self.dead_code_reset_count)
    return max(float(self.dead_code_threshold), 1.0)

  @nn.compact
  def __call__(self, x: jax.Array, *, where: jax.Array | None = None,
               update: bool | None = None) -> RVQOutput:
    """Quantises ``x`` and, when updating, advances the EMA state.

    Args:
      x: ``[..., d]`` float embeddings.
      where: optional ``[...]`` bool mask of valid rows.
      update: advance the codebook state; None means "when the ``rvq``
        collection is mutable and the module is not initialising".

    Returns:
      :class:`RVQOutput`.
    """
    if x.ndim < 1:
      raise ValueError(f"ResidualVQ: x must have shape [..., d], got {x.shape}")
    if where is not None and tuple(where.shape) != tuple(x.shape[:-1]):
      raise ValueError(
          f"ResidualVQ: where has shape {where.shape}, expected x.shape[:-1] = {x.shape[:-1]}")
    L, K, d = self.num_levels, self.codebook_size, x.shape[-1]
    lead_shape = x.shape[:-1]
    flat = x.reshape((-1, d)).astype(jnp.float32)
    valid = (jnp.ones(flat.shape[:1], bool) if where is None
             else where.reshape((-1,)).astype(bool))

    def initial_codebook():
      key = self.make_rng("params") if self.has_rng("params") else jax.random.key(self.seed)
      return self.init_scale * jax.random.normal(key, (L, K, d), jnp.float32)

    codebook = self.variable(RVQ_COLLECTION, "codebook", initial_codebook)
    ema_count = self.variable(RVQ_COLLECTION, "ema_count", lambda: jnp.ones((L, K), jnp.float32))
    ema_sum = self.variable(RVQ_COLLECTION, "ema_sum", lambda: codebook.value)
    initialized = self.variable(RVQ_COLLECTION, "initialized", lambda: jnp.array(False))
    step = self.variable(RVQ_COLLECTION, "step", lambda: jnp.array(0, jnp.int32))
    if tuple(codebook.value.shape) != (L, K, d):
      raise ValueError(
          f"ResidualVQ: x has width d={d} but the codebook state has shape "
          f"{codebook.value.shape}, expected {(L, K, d)}")

    if update is None:
      update = self.is_mutable_collection(RVQ_COLLECTION) and not self.is_initializing()
    if update and not self.is_mutable_collection(RVQ_COLLECTION):
      raise ValueError(f"ResidualVQ: update=True needs apply(..., mutable=[{RVQ_COLLECTION!r}])")

    if self.has_rng(RVQ_COLLECTION):
      key = self.make_rng(RVQ_COLLECTION)
    else:
      key = jax.random.fold_in(jax.random.key(self.seed), step.value)
    kmeans_key, dead_key = jax.random.split(key)

    codebooks, counts, sums = codebook.value, ema_count.value, ema_sum.value
    any_valid = jnp.any(valid)
    if update and self.kmeans_init:
      # A fully padded batch cannot seed k-means; the first batch with valid rows does.
      codebooks, counts, sums = jax.lax.cond(
          initialized.value | ~any_valid,
          lambda: (codebooks, counts, sums),
          lambda: self._kmeans_codebooks(flat, valid, kmeans_key))

    codes, residuals, reconstruction = residual_cascade(flat, codebooks)
    # This batch's per-code counts and residual sums: the EMA step and the usage
    # statistics share them.
    batch_counts, batch_sums = assignment_sums(codes, residuals, valid, K)

    if update:
      # Levels are independent once the cascade has fixed their residuals.
      new_counts, new_sums, new_books = jax.vmap(
          lambda c, s, r, k, bc, bs: ema_update(c, s, r, k, valid, decay=self.decay,
                                                eps=self.eps, batch_counts=bc, batch_sums=bs))(
              counts, sums, residuals, codes.T, batch_counts, batch_sums)
      dead = jnp.zeros(new_counts.shape, bool)
      if self.dead_code_threshold > 0:  # expiry disabled: no sampling to compile
        def reseed(books, counts, sums):
          return jax.vmap(
              lambda b, c, s, r, k: replace_dead_codes(
                  b, c, s, r, valid, k, threshold=self.dead_code_threshold,
                  reset_count=self._reset_count()))(
                      books, counts, sums, residuals, jax.random.split(dead_key, L))

        behind_cond = self.reseed_behind_cond
        if behind_cond is None:
          behind_cond = jax.default_backend() == "cpu"
        if behind_cond:
          # Most steps have no dead code: skip the sampling then. replace_dead_codes
          # changes nothing without a dead code, so both branches agree whenever
          # the cheap one is taken.
          any_dead = jnp.any(new_counts < self.dead_code_threshold) & any_valid
          new_books, new_counts, new_sums, dead = jax.lax.cond(
              any_dead, reseed, lambda b, c, s: (b, c, s, jnp.zeros(c.shape, bool)),
              new_books, new_counts, new_sums)
        else:
          new_books, new_counts, new_sums, dead = reseed(new_books, new_counts, new_sums)
      codebook.value, ema_count.value, ema_sum.value = new_books, new_counts, new_sums
      initialized.value = initialized.value | any_valid
      step.value = step.value + 1
    else:
      dead = counts < self.dead_code_threshold

    group_ids, occupied = code_prefix_ids(codes, codebook_size=K, where=valid)
    stats = self._statistics(batch_counts, occupied, residuals, reconstruction, flat, valid, dead)
    quantized = flat + jax.lax.stop_gradient(reconstruction - flat)
    return RVQOutput(
        quantized=quantized.reshape(x.shape).astype(x.dtype),
        codes=codes.reshape(lead_shape + (L,)),
        stats=stats,
        group_ids=group_ids)

  def _kmeans_codebooks(self, flat, valid, key):
    """Codebooks, counts and sums from k-means on each level's residuals in turn."""
    def level(residual, level_key):
      centroids, sizes = kmeans(residual, valid, level_key, self.codebook_size, self.kmeans_iters)
      return residual - centroids[nearest_code(residual, centroids)], (centroids, sizes)

    _, (books, counts) = jax.lax.scan(level, flat, jax.random.split(key, self.num_levels))
    return books, counts, books * counts[..., None]

  def _statistics(self, usage, occupied, residuals, reconstruction, flat, valid, dead):
    """Per-level usage statistics over valid rows (see :class:`RVQOutput`).

    ``usage`` ``[L, K]`` counts valid rows per code; ``occupied`` ``[L]`` counts
    distinct code prefixes.
    """
    weights = valid.astype(jnp.float32)
    num_valid = jnp.sum(weights)
    probs = usage / jnp.maximum(num_valid, 1.0)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0),
                       axis=-1)
    nan = jnp.float32(jnp.nan)
    perplexity = jnp.where(num_valid > 0, jnp.exp(entropy), nan)
    mean_group_size = jnp.where(occupied > 0, num_valid / jnp.maximum(occupied, 1), nan)
    # residuals[l + 1] is what is left after level l; the last one is x - x_hat.
    left_after = jnp.concatenate([residuals[1:], (flat - reconstruction)[None]], axis=0)
    sq_norm = jnp.sum(jnp.sum(left_after**2, axis=-1) * weights, axis=-1)
    residual_sq_norm = jnp.where(num_valid > 0, sq_norm / jnp.maximum(num_valid, 1.0), nan)
    return {
        "perplexity": perplexity,
        "dead_fraction": jnp.mean(dead.astype(jnp.float32), axis=-1),
        "occupied_prefixes": occupied,
        "mean_group_size": mean_group_size,
        "residual_sq_norm": residual_sq_norm,
    }
