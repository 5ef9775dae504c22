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
  is differentiable end to end; :meth:`Seq2Slate.decode` decodes greedily or
  by beam search with hard masks, optionally restricting every position to
  the constrained greedy's feasible picks
  (:func:`hgrank_jax.ops.category_constraints.allowed_picks`: per-category minimum
  and maximum counts and a run length), so the learned model never emits an
  infeasible list when a feasible one exists; :meth:`Seq2Slate.sample` and
  :meth:`Seq2Slate.log_prob` give the masked policy's lists and
  log-probabilities for policy-gradient training.
* :class:`ListEvaluator`: an order-aware value ``V(pi)`` of a whole final
  list, the evaluator of the generator-evaluator reranker
  (:mod:`hgrank_jax.rerank.generator_evaluator`).

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

from hgrank_jax.ops.category_constraints import advance, allowed_picks, category_state

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

  def _constraints(self, where, categories, num_categories, min_count, max_count, max_run):
    """Constraint spec of the masked decoders, or None without categories."""
    if categories is None:
      return None
    if num_categories is None:
      raise ValueError("constrained decoding needs num_categories with categories")
    batch = where.shape[:-1]
    shape = batch + (num_categories,)
    lo = jnp.broadcast_to(jnp.asarray(0 if min_count is None else min_count, jnp.int32), shape)
    hi = jnp.broadcast_to(jnp.asarray(self.list_length if max_count is None else max_count,
                                      jnp.int32), shape)
    return {"categories": jnp.asarray(categories, jnp.int32), "lo": lo, "hi": hi,
            "max_run": self.list_length if max_run is None else max_run,
            "num_categories": num_categories}

  def _rollout(self, features, initial_score, user, where, spec, choose):
    """Builds lists position by position; ``choose(t, log_probs, allowed) -> pick``.

    Returns int32 ``[B, k]`` picks (``-1`` where nothing is allowed) and the
    float32 ``[B]`` log-probability of the list under the masked policy.
    """
    states = self.encoder(features, initial_score, user, where)
    keys = self.key_proj(states)
    batch = states.shape[:-2]
    carry = jnp.zeros(batch + (self.hidden,))
    step_input = jnp.broadcast_to(self.start, batch + (self.hidden,))
    target = jnp.minimum(self.list_length, where.sum(-1))
    state = (category_state(where, jnp.zeros(where.shape, jnp.int32), 1) if spec is None
             else category_state(where, spec["categories"], spec["num_categories"]))
    picks, log_prob = [], jnp.zeros(batch)
    for t in range(self.list_length):
      carry, _ = self.cell(carry, step_input)
      allowed = self._allowed(state, spec, t, target)
      # A finite mask value keeps log-probabilities (and their gradients) finite
      # on lists with nothing left to pick.
      log_probs = jax.nn.log_softmax(
          jnp.where(allowed, self._logits(states, keys, carry), _MASKED), axis=-1)
      pick = choose(t, log_probs, allowed)
      take = jnp.any(allowed, axis=-1)
      chosen_log_prob = jnp.take_along_axis(log_probs, jnp.maximum(pick, 0)[..., None], -1)[..., 0]
      log_prob = log_prob + jnp.where(take, chosen_log_prob, 0.0)
      state = self._advance(state, spec, pick, take)
      picks.append(jnp.where(take, pick, -1))
      step_input = jnp.take_along_axis(states, jnp.maximum(pick, 0)[..., None, None],
                                       axis=-2)[..., 0, :]
    return jnp.stack(picks, axis=-1).astype(jnp.int32), log_prob

  @staticmethod
  def _allowed(state, spec, step, target):
    if spec is None:
      return state.available & (step < target)[..., None]
    return allowed_picks(state, spec["categories"], step, target, spec["lo"],
                                     spec["hi"], max_run=spec["max_run"])

  @staticmethod
  def _advance(state, spec, pick, take):
    categories = (jnp.zeros(state.available.shape, jnp.int32) if spec is None
                  else jnp.broadcast_to(spec["categories"], state.available.shape))
    return advance(state, pick, take, categories)

  def decode(self, features, initial_score, user, where, *, categories=None,
             num_categories: Optional[int] = None, min_count=None, max_count=None,
             max_run: Optional[int] = None, beam_width: int = 1, return_beams: bool = False):
    """Greedy or beam decoding with hard masks: int32 ``[B, k]``, ``-1`` when nothing is allowed.

    Chosen candidates are always masked. With ``categories`` every position
    is also restricted to :func:`hgrank_jax.ops.category_constraints.allowed_picks`
    (the constrained greedy's own rule), so the list honours ``min_count``,
    ``max_count`` and ``max_run`` whenever a feasible list exists.

    Args:
      features, initial_score, user, where: the model inputs.
      categories: optional int ``[B, n]``; needed for the constraint masks.
      num_categories: static int C with ``categories``.
      min_count, max_count: optional int, scalar, ``[C]`` or ``[B, C]``.
      max_run: optional static int, longest run of one category.
      beam_width: static int; 1 is greedy, W > 1 keeps the W most likely
        partial lists (sum of masked log-probabilities) at every position.
      return_beams: with ``beam_width``, also return every beam.

    Returns:
      int32 ``[B, k]``, the most likely list found; with ``return_beams`` the
      tuple ``(beams int32 [B, W, k], log_probs float32 [B, W])`` sorted best
      first (a beam that could not be filled has log-probability ``-inf``).
    """
    spec = self._constraints(where, categories, num_categories, min_count, max_count, max_run)
    if beam_width == 1 and not return_beams:
      greedy = lambda t, log_probs, allowed: jnp.argmax(  # noqa: E731
          jnp.where(allowed, log_probs, -jnp.inf), axis=-1)
      return self._rollout(features, initial_score, user, where, spec, greedy)[0]
    beams, scores = self._beam(features, initial_score, user, where, spec, beam_width)
    return (beams, scores) if return_beams else beams[..., 0, :]

  def sample(self, features, initial_score, user, where, *, key, categories=None,
             num_categories: Optional[int] = None, min_count=None, max_count=None,
             max_run: Optional[int] = None):
    """Samples lists from the masked policy: ``(int32 [B, k], log_prob float32 [B])``.

    The log-probability is differentiable in the parameters (REINFORCE); the
    masks are those of :meth:`decode`.
    """
    spec = self._constraints(where, categories, num_categories, min_count, max_count, max_run)
    step_keys = jax.random.split(key, self.list_length)

    def draw(t, log_probs, allowed):
      masked = jnp.where(allowed, log_probs, -jnp.inf)
      safe = jnp.where(jnp.any(allowed, -1, keepdims=True), masked, 0.0)
      return jax.random.categorical(step_keys[t], safe, axis=-1)

    return self._rollout(features, initial_score, user, where, spec, draw)

  def log_prob(self, features, initial_score, user, where, picks, *, categories=None,
               num_categories: Optional[int] = None, min_count=None, max_count=None,
               max_run: Optional[int] = None):
    """Log-probability float32 ``[B]`` of given lists ``picks [B, k]`` under the masked policy."""
    spec = self._constraints(where, categories, num_categories, min_count, max_count, max_run)
    return self._rollout(features, initial_score, user, where, spec,
                         lambda t, log_probs, allowed: picks[..., t])[1]

  def _beam(self, features, initial_score, user, where, spec, width):
    states = self.encoder(features, initial_score, user, where)
    keys = self.key_proj(states)
    batch, n = states.shape[:-2], states.shape[-2]
    tile = lambda x: jnp.broadcast_to(x[..., None, :, :] if x.ndim == len(batch) + 2  # noqa: E731
                                      else x[..., None, :], x.shape[:len(batch)] + (width,)
                                      + x.shape[len(batch):])
    states_w, keys_w = tile(states), tile(keys)
    if spec is not None:
      spec = dict(spec, categories=tile(spec["categories"]), lo=tile(spec["lo"]),
                  hi=tile(spec["hi"]))
    target = jnp.broadcast_to(jnp.minimum(self.list_length, where.sum(-1))[..., None],
                              batch + (width,))
    carry = jnp.zeros(batch + (width, self.hidden))
    step_input = jnp.broadcast_to(self.start, batch + (width, self.hidden))
    state = (category_state(tile(where), jnp.zeros(tile(where).shape, jnp.int32), 1)
             if spec is None else category_state(tile(where), spec["categories"],
                                                 spec["num_categories"]))
    # Only beam 0 is live at the start, so the first expansion has no duplicates.
    score = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf) * jnp.ones(batch + (width,))
    picks = jnp.full(batch + (width, self.list_length), -1, jnp.int32)
    for t in range(self.list_length):
      carry, _ = self.cell(carry, step_input)
      allowed = self._allowed(state, spec, t, target)
      log_probs = jax.nn.log_softmax(
          jnp.where(allowed, self._logits(states_w, keys_w, carry), _MASKED), axis=-1)
      any_allowed = jnp.any(allowed, axis=-1)
      # Option n is "leave the slot empty", open only to a beam with no allowed item.
      options = jnp.concatenate([jnp.where(allowed, log_probs, -jnp.inf),
                                 jnp.where(any_allowed, -jnp.inf, 0.0)[..., None]], -1)
      total = (score[..., None] + options).reshape(batch + (width * (n + 1),))
      score, flat = jax.lax.top_k(total, width)
      parent, item = flat // (n + 1), flat % (n + 1)
      take = (item < n) & jnp.isfinite(score)
      pick = jnp.where(take, item, -1)
      gather = lambda x: jnp.take_along_axis(  # noqa: E731
          x, parent.reshape(parent.shape + (1,) * (x.ndim - parent.ndim)), axis=len(batch))
      carry, picks = gather(carry), gather(picks)
      state = jax.tree_util.tree_map(gather, state)
      state = self._advance(state, spec, pick, take)
      picks = picks.at[..., t].set(pick)
      step_input = jnp.take_along_axis(states_w, jnp.maximum(pick, 0)[..., None, None],
                                       axis=-2)[..., 0, :]
    return picks, score


class ListEvaluator(nn.Module):
  """Order-aware value ``V(pi)`` of whole final lists (generator-evaluator).

  Each slot of a list is embedded from its item's features, initial score and
  the user vector plus a position embedding; a transformer over the slots
  (valid slots attend to each other, so the value can see repeated
  categories and what comes before what) gives each slot a contribution and
  ``V`` is their sum over the valid slots.

  Attributes:
    list_length: k, slots per list (size of the position table).
    hidden, num_heads, num_layers: transformer width, heads and blocks.
  """

  list_length: int = 10
  hidden: int = 32
  num_heads: int = 4
  num_layers: int = 1

  @nn.compact
  def __call__(self, features, initial_score, user, lists):
    """Values float32 ``[B, M]`` of ``lists int [B, M, k]`` (``-1`` empty slots).

    Args:
      features: float ``[B, n, F]``; initial_score: float ``[B, n]``;
      user: float ``[B, U]``: the request's model inputs.
      lists: int ``[B, M, k]``, M candidate lists per request.
    """
    k = lists.shape[-1]
    if k > self.list_length:
      raise ValueError(f"lists of length {k} exceed list_length={self.list_length}")
    filled = lists >= 0
    slot = jnp.maximum(lists, 0)
    items = jnp.concatenate([features, initial_score[..., None]], axis=-1)   # [B, n, F+1]
    chosen = jnp.take_along_axis(items[:, None], slot[..., None], axis=-2)    # [B, M, k, F+1]
    x = nn.Dense(self.hidden, name="slot_in")(chosen)
    x = x + nn.Dense(self.hidden, name="user_in")(user)[:, None, None, :]
    x = x + nn.Embed(self.list_length, self.hidden, name="position")(jnp.arange(k))
    x = x * filled[..., None]
    mask = nn.make_attention_mask(filled, filled)
    for layer in range(self.num_layers):
      x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                              name=f"attention_{layer}")(nn.LayerNorm()(x),
                                                                         mask=mask)
      hidden = nn.gelu(nn.Dense(2 * self.hidden, name=f"mlp_in_{layer}")(nn.LayerNorm()(x)))
      x = x + nn.Dense(self.hidden, name=f"mlp_out_{layer}")(hidden)
    contribution = nn.Dense(1, name="value")(nn.LayerNorm(name="final_norm")(x))[..., 0]
    return jnp.sum(jnp.where(filled, contribution, 0.0), axis=-1)
