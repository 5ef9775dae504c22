"""Personalised business multipliers and the order-preserving merge of queues.

Layer 2 treats each business line as an already-sorted queue and decides, slot
by slot, which queue the next card comes from (seed 001). Two pieces live here:

* multipliers ``MixScore_{u,b} = alpha_{u,b}(x) * CalibScore_b`` with alpha
  learned from logged outcomes and positive by construction, either as a table
  per user segment (:func:`fit_segment_multipliers`) or as a small Flax model
  over user/context features (:class:`MultiplierNet`, :func:`fit_multiplier_net`);
  both maximise the same Poisson log-likelihood
  ``sum y log(alpha p) - alpha p``, whose optimum for a segment table is the
  ratio of observed to predicted outcomes;
* :func:`merge_queues`, which fills ``k`` slots by repeatedly taking the head of
  the queue with the highest mixed score among the heads the page rules allow.
  Only heads are ever taken, so the order inside each queue is unchanged by
  construction, whatever the scores.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit_segment_multipliers(calibrated, outcomes, segments, businesses, num_segments,
                            num_businesses, *, weights=None, prior_strength=20.0):
  """Per (segment, business) multiplier: observed over predicted outcomes.

  ``alpha = (sum y + k) / (sum p + k)`` with ``k = prior_strength`` expected
  outcomes of shrinkage toward 1, the Poisson maximum-likelihood table with a
  prior; it is positive whenever the inputs are non-negative.

  Args:
    calibrated: float ``[n]`` calibrated predictions p (expected outcomes).
    outcomes: float ``[n]`` logged outcomes y.
    segments: int ``[n]`` user segment of each row.
    businesses: int ``[n]`` business line of each row.
    num_segments, num_businesses: static ints.
    weights: optional float ``[n]``.
    prior_strength: pseudo-count of expected outcomes at alpha = 1.

  Returns:
    Float ``[num_segments, num_businesses]`` multipliers.
  """
  calibrated = jnp.asarray(calibrated, jnp.float32)
  weights = jnp.ones_like(calibrated) if weights is None else jnp.asarray(weights, jnp.float32)
  cell = jnp.asarray(segments) * num_businesses + jnp.asarray(businesses)
  size = num_segments * num_businesses
  observed = jax.ops.segment_sum(weights * jnp.asarray(outcomes, jnp.float32), cell, size)
  predicted = jax.ops.segment_sum(weights * calibrated, cell, size)
  alpha = (observed + prior_strength) / (predicted + prior_strength)
  return alpha.reshape(num_segments, num_businesses)


class MultiplierNet(nn.Module):
  """Maps user/context features ``[..., d]`` to positive multipliers ``[..., B]``.

  ``alpha = exp(max_log_alpha * tanh(z / max_log_alpha))``: positive, equal to 1
  at initialisation of the last layer's zero bias, and bounded in
  ``[exp(-max_log_alpha), exp(max_log_alpha)]`` so one noisy segment cannot
  claim all traffic.
  """

  num_businesses: int
  hidden: Sequence[int] = (32,)
  max_log_alpha: float = 2.0

  @nn.compact
  def __call__(self, features):
    x = features
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    z = nn.Dense(self.num_businesses, kernel_init=nn.initializers.zeros)(x)
    return jnp.exp(self.max_log_alpha * jnp.tanh(z / self.max_log_alpha))


def fit_multiplier_net(features, calibrated, outcomes, businesses, num_businesses, *,
                       hidden=(32,), num_steps=500, learning_rate=0.02, seed=0):
  """Trains :class:`MultiplierNet` on logged rows by the Poisson log-likelihood.

  Args:
    features: float ``[n, d]`` user/context features of each logged row.
    calibrated: float ``[n]`` calibrated prediction of the shown item.
    outcomes: float ``[n]`` logged outcome.
    businesses: int ``[n]`` business line of the shown item.
    num_businesses: static int.
    hidden, num_steps, learning_rate, seed: model and full-batch Adam settings.

  Returns:
    ``(model, params)``; ``model.apply(params, features)`` gives ``[n, B]``.
  """
  features = jnp.asarray(features, jnp.float32)
  calibrated = jnp.asarray(calibrated, jnp.float32)
  outcomes = jnp.asarray(outcomes, jnp.float32)
  businesses = jnp.asarray(businesses)
  model = MultiplierNet(num_businesses=num_businesses, hidden=tuple(hidden))
  params = model.init(jax.random.PRNGKey(seed), features[:1])
  optimizer = optax.adam(learning_rate)

  def loss_fn(params):
    alpha = jnp.take_along_axis(model.apply(params, features), businesses[:, None], axis=1)[:, 0]
    rate = alpha * calibrated
    return jnp.mean(rate - outcomes * jnp.log(jnp.maximum(rate, 1e-12)))

  @jax.jit
  def train(params):
    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None,
                                       length=num_steps)
    return params, losses

  params, _ = train(params)
  return model, params


def mix_scores(calibrated, alpha):
  """``MixScore = alpha * CalibScore``: ``[..., B, q] * [..., B] -> [..., B, q]``."""
  return jnp.asarray(alpha)[..., None] * jnp.asarray(calibrated)


def _merge_one(scores, where, k, monetized, max_monetized, no_adjacent_monetized,
               max_per_business):
  """Merge for one request: scores/where ``[B, q]``. See :func:`merge_queues`."""
  num_businesses, queue_length = scores.shape
  # A queue ends at its first invalid or NaN entry; nothing after it is shown.
  usable = jnp.cumprod(where & ~jnp.isnan(scores), axis=1).astype(bool)
  lengths = usable.sum(axis=1)
  businesses = jnp.arange(num_businesses)

  def fill_slot(state, _):
    heads, counts, monetized_count, previous_monetized = state
    has_head = heads < lengths
    head_scores = jnp.take_along_axis(scores, jnp.minimum(heads, queue_length - 1)[:, None],
                                      axis=1)[:, 0]
    allowed = has_head & (counts < max_per_business)
    allowed &= ~(monetized & (monetized_count >= max_monetized))
    allowed &= ~(monetized & previous_monetized & no_adjacent_monetized)
    candidate = jnp.where(allowed, head_scores, -jnp.inf)
    winner = jnp.argmax(candidate)
    filled = jnp.any(allowed)
    take = filled & (businesses == winner)
    slot_business = jnp.where(filled, winner, -1)
    slot_position = jnp.where(filled, heads[winner], -1)
    new_state = (heads + take, counts + take,
                 monetized_count + jnp.sum(take & monetized),
                 filled & monetized[winner])
    return new_state, (slot_business, slot_position, candidate)

  init = (jnp.zeros(num_businesses, jnp.int32), jnp.zeros(num_businesses, jnp.int32),
          jnp.asarray(0, jnp.int32), jnp.asarray(False))
  _, (slot_business, slot_position, candidates) = jax.lax.scan(fill_slot, init, None, length=k)
  return slot_business.astype(jnp.int32), slot_position.astype(jnp.int32), candidates


def merge_queues(scores, k, *, where=None, monetized=None, max_monetized=None,
                 no_adjacent_monetized=False, max_per_business=None, validate=True):
  """Fills ``k`` slots from sorted business queues without reordering any queue.

  At each slot the allowed heads compete on their mixed score and the highest
  wins (ties go to the lower business index); its queue advances by one.
  Page rules decide which heads are allowed: at most ``max_monetized``
  monetised items in the ``k`` slots, no monetised item right after another
  (``no_adjacent_monetized``), and at most ``max_per_business[b]`` items of
  business b. A slot that no queue can fill under the rules is left empty
  (business -1, position -1): an empty or exhausted queue simply never
  competes, it is not an error.

  Args:
    scores: float ``[..., B, q]``; queue b's items in its own ranked order (its
      first item is its best); the scores need not be sorted.
    k: static number of slots.
    where: optional bool ``[..., B, q]``; a queue ends at its first False.
    monetized: optional bool ``[B]`` marking monetisation businesses (ads, ...).
    max_monetized: optional int, cap on monetised items among the k slots.
    no_adjacent_monetized: forbid two monetised items in consecutive slots.
    max_per_business: optional int ``[B]``, cap per business among the k slots.
    validate: with concrete inputs, raise ``ValueError`` on NaN among valid
      scores or on a queue whose mask has holes. Under jit nothing can raise:
      a queue then ends at its first NaN or invalid entry.

  Returns:
    ``(business [..., k] int32, position [..., k] int32, head_scores
    [..., k, B])``: the business filling each slot and the index of the item in
    that business's queue (-1 for an empty slot), and for each slot the scores
    of the heads that were allowed to compete (-inf otherwise), which callers
    use for win/loss accounting.
  """
  scores = jnp.asarray(scores)
  if scores.ndim < 2:
    raise ValueError(f"scores must be [..., B, q], got shape {scores.shape}")
  where = jnp.ones(scores.shape, bool) if where is None else jnp.asarray(where, bool)
  num_businesses = scores.shape[-2]
  if validate and not isinstance(scores, jax.core.Tracer) and not isinstance(where, jax.core.Tracer):
    _validate_queues(np.asarray(scores), np.asarray(where))
  monetized = (jnp.zeros(num_businesses, bool) if monetized is None
               else jnp.asarray(monetized, bool))
  big = jnp.iinfo(jnp.int32).max
  max_monetized = jnp.asarray(big if max_monetized is None else max_monetized, jnp.int32)
  max_per_business = (jnp.full(num_businesses, big, jnp.int32) if max_per_business is None
                      else jnp.asarray(max_per_business, jnp.int32))
  batch_shape = scores.shape[:-2]
  flat_scores = scores.reshape((-1,) + scores.shape[-2:])
  flat_where = jnp.broadcast_to(where, scores.shape).reshape(flat_scores.shape)
  merge = jax.vmap(lambda s, w: _merge_one(s, w, k, monetized, max_monetized,
                                           no_adjacent_monetized, max_per_business))
  business, position, head_scores = merge(flat_scores, flat_where)
  return (business.reshape(batch_shape + (k,)), position.reshape(batch_shape + (k,)),
          head_scores.reshape(batch_shape + (k, num_businesses)))


def _validate_queues(scores, where):
  where = np.broadcast_to(where, scores.shape)
  if np.any(np.isnan(scores) & where):
    raise ValueError("NaN score among valid queue entries; mask it out with `where` or fix the "
                     "upstream score")
  holes = where[..., 1:] & ~where[..., :-1]
  if np.any(holes):
    raise ValueError("a queue's `where` mask has a gap (valid entry after an invalid one); a "
                     "queue must be a prefix of valid entries")
