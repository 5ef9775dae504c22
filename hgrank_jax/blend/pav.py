"""Weighted pool-adjacent-violators (PAV) for isotonic calibration, in JAX.

Calibration needs a *weighted, non-decreasing* least-squares fit of labels
against sorted scores, with ties in the score pooled first (as scikit-learn's
``IsotonicRegression`` does). The ``fast`` sorting op in ``hgrank_jax.ops`` has
an unweighted, non-increasing PAV over batches for the permutahedron projection;
weights change the pooling rule (a block's value is its weighted mean), so this
module keeps its own single-row kernel rather than bending that one.

The kernel is one ``lax.while_loop`` over a stack of blocks: each iteration
either pushes the next point or merges the two top blocks when they violate the
order, so it ends after at most ``2 m - 1`` iterations for ``m`` points and uses
O(m) memory. Only the first ``num_valid`` entries take part; the rest are
padding, which keeps shapes static under jit and vmap.
"""

import jax
import jax.numpy as jnp
from jax import lax


def weighted_pav(values, weights, num_valid):
  """Least-squares non-decreasing fit of ``values`` with ``weights``.

  Solves ``argmin_v sum_j w_j (v_j - y_j)^2`` subject to
  ``v_0 <= v_1 <= ... <= v_{m-1}`` over the first ``m = num_valid`` entries.

  Args:
    values: float array ``[n]``, the targets y (e.g. labels averaged over tied
      scores), already ordered by score.
    weights: float array ``[n]``, positive on the first ``num_valid`` entries.
    num_valid: int scalar (may be traced), how many leading entries to fit.

  Returns:
    Float array ``[n]``: the fit on the first ``num_valid`` entries; entries
    past it repeat the last fitted value (0 when ``num_valid`` is 0), so the
    output can serve directly as the knot values of a step/linear interpolant.
  """
  values = jnp.asarray(values)
  weights = jnp.asarray(weights, values.dtype)
  n = values.shape[0]
  num_valid = jnp.asarray(num_valid, jnp.int32)

  def violation(state):
    sums, totals, _, top, _ = state
    upper = jnp.maximum(top, 0)
    lower = jnp.maximum(top - 1, 0)
    # Non-decreasing needs mean(lower) <= mean(upper); cross-multiplying by the
    # positive block weights avoids dividing inside the loop.
    out_of_order = sums[lower] * totals[upper] > sums[upper] * totals[lower]
    return (top >= 1) & out_of_order

  def cond(state):
    return (state[4] < num_valid) | violation(state)

  def body(state):
    sums, totals, starts, top, next_index = state
    merge = violation(state)
    upper = jnp.maximum(top, 0)
    lower = jnp.maximum(top - 1, 0)
    index = jnp.minimum(next_index, n - 1)

    def do_merge(_):
      return (sums.at[lower].add(sums[upper]), totals.at[lower].add(totals[upper]),
              starts, top - 1, next_index)

    def do_push(_):
      slot = top + 1
      return (sums.at[slot].set(values[index] * weights[index]),
              totals.at[slot].set(weights[index]), starts.at[slot].set(next_index),
              slot, next_index + 1)

    return lax.cond(merge, do_merge, do_push, None)

  init = (jnp.zeros_like(values), jnp.zeros_like(values), jnp.zeros((n,), jnp.int32),
          jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32))
  sums, totals, starts, top, _ = lax.while_loop(cond, body, init)

  # Expand blocks to positions: mark each live block's first position; the
  # running count of marks is then every position's block id.
  live = jnp.arange(n) <= top
  marks = jnp.zeros((n,), jnp.int32).at[jnp.where(live, starts, n)].add(1, mode="drop")
  block_id = jnp.clip(jnp.cumsum(marks) - 1, 0, jnp.maximum(top, 0))
  block_mean = sums / jnp.where(totals > 0, totals, 1.0)
  fitted = block_mean[block_id]
  return jnp.where(top >= 0, fitted, jnp.zeros_like(fitted))


def pool_ties(scores, labels, weights, where=None):
  """Sorts by score and merges tied scores into weighted-mean points.

  Args:
    scores: float array ``[n]``.
    labels: float array ``[n]``.
    weights: float array ``[n]``, non-negative.
    where: optional bool ``[n]``; False entries (and zero-weight ones) are left
      out, as if absent.

  Returns:
    ``(unique_scores, mean_labels, total_weights, num_unique)``: the first three
    ``[n]`` float arrays hold the distinct valid scores in increasing order with
    the weighted mean label and total weight of each; entries from
    ``num_unique`` on are padding (score repeats the largest valid score,
    weight 0).
  """
  scores = jnp.asarray(scores)
  dtype = scores.dtype
  labels = jnp.asarray(labels, dtype)
  weights = jnp.asarray(weights, dtype)
  n = scores.shape[0]
  valid = weights > 0
  if where is not None:
    valid = valid & where
  # Invalid entries sort last whatever their score.
  order = jnp.lexsort((scores, ~valid))
  sorted_scores, sorted_valid = scores[order], valid[order]
  sorted_weights = jnp.where(sorted_valid, weights[order], 0.0)
  sorted_labels = labels[order]
  new_value = jnp.concatenate([jnp.ones((1,), bool), sorted_scores[1:] != sorted_scores[:-1]])
  segment = jnp.cumsum(new_value & sorted_valid) - 1
  segment = jnp.where(sorted_valid, segment, n)  # invalid entries are dropped
  total_weights = jax.ops.segment_sum(sorted_weights, segment, num_segments=n)
  weighted_labels = jax.ops.segment_sum(sorted_weights * sorted_labels, segment, num_segments=n)
  unique_scores = jax.ops.segment_max(jnp.where(sorted_valid, sorted_scores, -jnp.inf), segment,
                                      num_segments=n)
  num_unique = jnp.sum(new_value & sorted_valid).astype(jnp.int32)
  mean_labels = weighted_labels / jnp.where(total_weights > 0, total_weights, 1.0)
  # Padding repeats the largest valid score so the knots stay non-decreasing.
  last = jnp.maximum(num_unique - 1, 0)
  padding = jnp.arange(n) >= num_unique
  unique_scores = jnp.where(padding, unique_scores[last], unique_scores)
  return unique_scores, mean_labels, total_weights, num_unique
