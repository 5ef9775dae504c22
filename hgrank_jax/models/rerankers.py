"""Learned listwise rerankers: PRM and Seq2Slate (Flax linen).

Both read one request's candidate list as a set of feature vectors and attend
across it, so an item's new score can depend on what else is in the list:

* :class:`PRM` (Pei et al., 2019, personalised re-ranking): a transformer
  encoder over ``item features + initial score + position embedding of the
  initial order + user vector`` emitting one new score per candidate; the final
  list is the top k of those scores.
* :class:`Seq2Slate` (Bello et al., 2018): the same encoder followed by a
  pointer-network decoder that builds the list position by position,
  attending over the encoder states and masking what was already chosen.
  :meth:`Seq2Slate.__call__` returns a *soft* pointer matrix (each step's
  softmax over the candidates, with the mass already spent discounted), which
  is differentiable end to end; :meth:`Seq2Slate.decode` decodes greedily with
  hard masks, optionally also masking categories at their cap or that would
  exceed a run length, so the learned model never emits a list that breaks
  those constraints.

Inputs (batch ``B``, ``n`` candidates, ``F`` item features, ``U`` user
features): ``features float [B, n, F]``, ``initial_score float [B, n]``,
``user float [B, U]``, ``where bool [B, n]``. Training code lives in
:mod:`hgrank_jax.rerank.learned`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

_MASKED = -1e9


class ListEncoder(nn.Module):
  """Pre-norm transformer encoder over a candidate list.

  Attributes:
    hidden: model width.
    num_heads: attention heads.
    num_layers: encoder blocks.
    max_len: largest list length (size of the position table).
    use_position: add the embedding of each candidate's initial position;
      without it the encoder is permutation-equivariant.
  """

  hidden: int = 64
  num_heads: int = 4
  num_layers: int = 2
  max_len: int = 64
  use_position: bool = True

  @nn.compact
  def __call__(self, features, initial_score, user, where):
    """Returns float32 ``[B, n, hidden]`` candidate states."""
    n = features.shape[-2]
    x = nn.Dense(self.hidden, name="item_in")(
        jnp.concatenate([features, initial_score[..., None]], axis=-1))
    x = x + nn.Dense(self.hidden, name="user_in")(user)[..., None, :]
    if self.use_position:
      if n > self.max_len:
        raise ValueError(f"list length {n} exceeds max_len={self.max_len}")
      x = x + nn.Embed(self.max_len, self.hidden, name="position")(jnp.arange(n))
    mask = nn.make_attention_mask(where, where)
    for layer in range(self.num_layers):
      attended = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, name=f"attention_{layer}")(
              nn.LayerNorm()(x), mask=mask)
      x = x + attended
      hidden = nn.gelu(nn.Dense(2 * self.hidden, name=f"mlp_in_{layer}")(nn.LayerNorm()(x)))
      x = x + nn.Dense(self.hidden, name=f"mlp_out_{layer}")(hidden)
    return nn.LayerNorm(name="final_norm")(x)


class PRM(nn.Module):
  """Personalised re-ranking model: one new score per candidate.

  Attributes: as for :class:`ListEncoder`.
  """

  hidden: int = 64
  num_heads: int = 4
  num_layers: int = 2
  max_len: int = 64
  use_position: bool = True

  @nn.compact
  def __call__(self, features, initial_score, user, where):
    """Returns float32 ``[B, n]`` scores; padded candidates get ``-1e9``."""
    states = ListEncoder(self.hidden, self.num_heads, self.num_layers, self.max_len,
                         self.use_position, name="encoder")(features, initial_score, user, where)
    # Starting from the initial score lets the model learn a correction to it.
    score = nn.Dense(1, name="score")(states)[..., 0] + initial_score
    return jnp.where(where, score, _MASKED)


class Seq2Slate(nn.Module):
  """Pointer-network reranker that emits the list position by position.

  Attributes:
    list_length: k, the positions decoded.
    hidden, num_heads, num_layers, max_len, use_position: the encoder's.
  """

  list_length: int = 10
  hidden: int = 64
  num_heads: int = 4
  num_layers: int = 2
  max_len: int = 64
  use_position: bool = True

  def setup(self):
    self.encoder = ListEncoder(self.hidden, self.num_heads, self.num_layers, self.max_len,
                               self.use_position)
    self.cell = nn.GRUCell(self.hidden)
    self.start = self.param("start", nn.initializers.normal(0.05), (self.hidden,))
    self.key_proj = nn.Dense(self.hidden, use_bias=False)
    self.query_proj = nn.Dense(self.hidden)
    self.pointer = nn.Dense(1, use_bias=False)
    self.score_bias = nn.Dense(1)

  def _logits(self, states, keys, carry):
    query = self.query_proj(carry)[..., None, :]
    return self.pointer(jnp.tanh(keys + query))[..., 0] + self.score_bias(states)[..., 0]

  def __call__(self, features, initial_score, user, where, *, temperature=1.0):
    """Soft pointer matrix ``float32 [B, k, n]``, row t a distribution over candidates.

    Step t's softmax adds ``log(remaining mass)`` to the logits, so a candidate
    already (softly) chosen becomes unlikely; the next decoder input is the
    expected state of the chosen candidate.
    """
    states = self.encoder(features, initial_score, user, where)
    keys = self.key_proj(states)
    batch = states.shape[:-2]
    carry = jnp.zeros(batch + (self.hidden,))
    step_input = jnp.broadcast_to(self.start, batch + (self.hidden,))
    remaining = where.astype(jnp.float32)
    rows = []
    for _ in range(self.list_length):
      carry, _ = self.cell(carry, step_input)
      logits = self._logits(states, keys, carry) + jnp.log(jnp.maximum(remaining, 1e-6))
      logits = jnp.where(where, logits, _MASKED)
      probabilities = jax.nn.softmax(logits / temperature, axis=-1)
      rows.append(probabilities)
      remaining = jnp.clip(remaining - probabilities, 0.0, 1.0)
      step_input = jnp.einsum("...n,...nh->...h", probabilities, states)
    return jnp.stack(rows, axis=-2)

  def decode(self, features, initial_score, user, where, *, categories=None,
             num_categories: Optional[int] = None, max_count=None, max_run: Optional[int] = None):
    """Greedy decoding with hard masks: int32 ``[B, k]``, ``-1`` when nothing is allowed.

    Args:
      features, initial_score, user, where: the model inputs.
      categories: optional int ``[B, n]``; needed for the constraint masks.
      num_categories: static int C with ``categories``.
      max_count: optional int, scalar or ``[C]``: a category at its cap is masked.
      max_run: optional int: a category that would extend a run past it is masked.
    """
    states = self.encoder(features, initial_score, user, where)
    keys = self.key_proj(states)
    batch = states.shape[:-2]
    carry = jnp.zeros(batch + (self.hidden,))
    step_input = jnp.broadcast_to(self.start, batch + (self.hidden,))
    available = where
    constrained = categories is not None
    if constrained:
      one_hot = jax.nn.one_hot(categories, num_categories, dtype=jnp.int32)
      counts = jnp.zeros(batch + (num_categories,), jnp.int32)
      last = jnp.full(batch, -1)
      run = jnp.zeros(batch, jnp.int32)
    picks = []
    for _ in range(self.list_length):
      carry, _ = self.cell(carry, step_input)
      allowed = available
      if constrained:
        if max_count is not None:
          at_cap = counts >= jnp.asarray(max_count)
          allowed &= ~jnp.einsum("...nc,...c->...n", one_hot, at_cap.astype(jnp.int32)).astype(bool)
        if max_run is not None:
          allowed &= ~((categories == last[..., None]) & (run[..., None] >= max_run))
      logits = jnp.where(allowed, self._logits(states, keys, carry), -jnp.inf)
      pick = jnp.argmax(logits, axis=-1)
      take = jnp.any(allowed, axis=-1)
      chosen = jax.nn.one_hot(pick, where.shape[-1], dtype=bool) & take[..., None]
      available = available & ~chosen
      if constrained:
        category = jnp.take_along_axis(categories, pick[..., None], -1)[..., 0]
        counts = counts + one_hot[jnp.arange(pick.shape[0]), pick] * take[..., None]
        run = jnp.where(take, jnp.where(category == last, run + 1, 1), run)
        last = jnp.where(take, category, last)
      picks.append(jnp.where(take, pick, -1))
      step_input = jnp.take_along_axis(states, pick[..., None, None], axis=-2)[..., 0, :]
    return jnp.stack(picks, axis=-1).astype(jnp.int32)
