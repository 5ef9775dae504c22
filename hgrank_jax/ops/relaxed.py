"""Dense soft permutation matrices: SoftSort, NeuralSort and column normalisation.

Both relaxations produce a matrix ``P[..., k, i]``, the probability that item
``i`` sits at position ``k`` (position 0 = largest score). Their raw rows are
softmaxes, so rows sum to one but columns do not, which biases ranks read off
the columns and lets top-k masks exceed 1. ``column_normalise`` fixes that
with a few Sinkhorn scaling steps kept as two vectors (``u``, ``v``) on a
shared kernel, so autodiff stores O(n) per step on top of the one ``n x n``
kernel.

Padding is built into the support: valid items may only occupy the first
``m`` positions (``m`` = number of valid items) and the padded item with the
``j``-th padded index sits, with probability one, at position ``m + j``. That
block structure is a fixed point of the Sinkhorn steps, so normalisation never
leaks mass between valid and padded items.
"""

import jax
import jax.numpy as jnp

# Log-probability used for forbidden (item, position) pairs. Finite so that no
# ``inf - inf`` can appear in log-space arithmetic; exp() of it is exactly 0.
_FORBIDDEN = -1e30


def support(valid):
  """Allowed (position, item) pairs ``[..., n, n]`` for a validity mask ``[..., n]``."""
  n = valid.shape[-1]
  num_valid = valid.sum(-1, keepdims=True)
  padded_position = num_valid + jnp.cumsum(~valid, axis=-1) - 1
  positions = jnp.arange(n)[:, None]
  valid_part = valid[..., None, :] & (positions < num_valid[..., None])
  padded_part = (~valid[..., None, :]) & (positions == padded_position[..., None, :])
  return valid_part | padded_part


def softsort_logits(scores, sorted_scores, temperature):
  """SoftSort (Prillo & Eisenschlos 2020): ``-|sorted_k - s_i| / tau``."""
  return -jnp.abs(sorted_scores[..., :, None] - scores[..., None, :]) / temperature


def neuralsort_logits(scores, valid, temperature):
  """NeuralSort (Grover et al. 2019) over the valid items, descending order.

  Row k (0-based) scores item i by ``(m + 1 - 2 (k + 1)) s_i - sum_j |s_i - s_j|``
  with the sum over valid j and m the number of valid items.
  """
  n = scores.shape[-1]
  num_valid = valid.sum(-1, keepdims=True).astype(scores.dtype)
  pair_gaps = jnp.abs(scores[..., :, None] - scores[..., None, :])
  spread = jnp.sum(jnp.where(valid[..., None, :], pair_gaps, 0.0), axis=-1)
  row_scale = num_valid + 1.0 - 2.0 * jnp.arange(1, n + 1, dtype=scores.dtype)
  logits = row_scale[..., :, None] * scores[..., None, :] - spread[..., None, :]
  return logits / temperature


def permutation_from_logits(logits, allowed, normalise_iters):
  """Row-softmax of ``logits`` on ``allowed``, then Sinkhorn column scaling.

  Args:
    logits: float ``[..., n, n]`` (position, item).
    allowed: bool ``[..., n, n]`` from ``support``.
    normalise_iters: number of (column, row) scaling rounds; 0 keeps the raw
      row-stochastic matrix. Rows always sum to one on return.

  Returns:
    float ``[..., n, n]`` with non-negative entries and unit row sums.
  """
  logits = jnp.where(allowed, logits, _FORBIDDEN)
  kernel = jax.nn.softmax(logits, axis=-1)
  if normalise_iters == 0:
    return kernel
  # Scaling vectors: P = diag(u) K diag(v). The floors only guard against
  # exact underflow; every row and column of K has an allowed entry.
  tiny = jnp.finfo(kernel.dtype).tiny

  def scaling_round(row_scale, _):
    # Matrix-vector products written as multiply-and-reduce: XLA fuses each
    # into one reduction kernel. As dots, every one of them (and its transpose
    # in the backward pass) was a separate GEMM for the GPU autotuner to try
    # configurations on, which made compile time explode with n.
    col_mass = jnp.sum(kernel * row_scale[..., :, None], axis=-2)
    col_scale = 1.0 / jnp.maximum(col_mass, tiny)
    row_mass = jnp.sum(kernel * col_scale[..., None, :], axis=-1)
    return 1.0 / jnp.maximum(row_mass, tiny), col_scale

  # A scan keeps the compiled graph one round long whatever normalise_iters is.
  row_scale, col_scales = jax.lax.scan(
      scaling_round, jnp.ones(kernel.shape[:-1], kernel.dtype), None,
      length=normalise_iters)
  col_scale = col_scales[-1]
  return kernel * row_scale[..., :, None] * col_scale[..., None, :]
