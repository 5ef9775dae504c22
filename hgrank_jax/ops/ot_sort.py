"""Entropic optimal-transport sorting through ott-jax (``method="ot"``).

The transport itself is ``ott.tools.soft_sort.transport_for_sort`` (Cuturi et
al. 2019); this module only chooses how to call it so that values and
gradients are finite and the hard limit is reachable, which ott-jax 0.6.0's
defaults do not give:

* Squashing. ott's default squashes inputs through a sigmoid of whitened
  scores, which crowds extreme scores together so ranks stay blurred even at
  tiny epsilon. Here valid scores are mapped affinely (min-max) onto the
  targets' span, largest score onto target 0, so as epsilon shrinks the
  transport becomes the exact sorting permutation.
* Temperature. Targets sit ``1 / (T - 1)`` apart on [0, 1]; ``temperature`` is
  expressed in units of that spacing squared (``epsilon = temperature /
  (T - 1)^2``), so one temperature means the same sharpness at every list
  size. Epsilon is annealed geometrically from a coarse value (ott's
  ``Epsilon`` scheduler) so small temperatures converge in a few hundred
  Sinkhorn steps.
* Gradients. ott differentiates the Sinkhorn fixed point implicitly by
  default, and that linear solve returned NaN on many float32 lists. Here the
  Sinkhorn iterations are unrolled (``implicit_diff=None``), which is finite by
  construction.
* Padding. Padded items get zero source weight and the positions after the
  valid count get zero target weight, so no mass moves between valid and
  padded entries; ``sorting.py`` places the padded items afterwards.
"""

import functools
import importlib
import math

import jax
import jax.numpy as jnp


@functools.cache
def _ott(module):
  """Imports an ott-jax module on first use.

  ott-jax (with the jaxopt and lineax it pulls in) takes over a second to
  import, which every user of ``hgrank_jax.ops`` would pay even when no
  optimal-transport sort runs; it is loaded only when method "ot" is traced.
  """
  return importlib.import_module(module)

# Annealing: start epsilon at this many squared target spacings and divide it
# by 1/decay every Sinkhorn step until it reaches the requested temperature.
_ANNEAL_START = 1.0
_ANNEAL_DECAY = 0.9


def _epsilon(temperature, num_targets):
  spacing_sq = 1.0 / max(num_targets - 1, 1) ** 2
  target = temperature * spacing_sq
  init = max(_ANNEAL_START / temperature, 1.0)
  return _ott("ott.geometry.epsilon_scheduler").Epsilon(
      target, init=init, decay=_ANNEAL_DECAY)


def _anneal_steps(temperature):
  init = max(_ANNEAL_START / temperature, 1.0)
  return math.ceil(math.log(init) / -math.log(_ANNEAL_DECAY)) if init > 1 else 0


def _sinkhorn_kwargs(temperature, max_iterations, threshold):
  # Never stop while epsilon is still being annealed: an early convergence
  # check at a coarse epsilon would otherwise end the run.
  min_iterations = min(_anneal_steps(temperature) + 10, max_iterations)
  return dict(implicit_diff=None, max_iterations=max_iterations,
              min_iterations=min_iterations, threshold=threshold)


def _positions_coordinate(scores, valid):
  """Maps valid scores to [0, 1], largest to 0; padded entries to 0."""
  high = jnp.max(jnp.where(valid, scores, -jnp.inf), axis=-1, keepdims=True)
  low = jnp.min(jnp.where(valid, scores, jnp.inf), axis=-1, keepdims=True)
  high = jnp.where(jnp.isfinite(high), high, 0.0)
  low = jnp.where(jnp.isfinite(low), low, 0.0)
  spread = high - low
  safe_spread = jnp.where(spread > 0, spread, 1.0)
  return jnp.where(valid, (high - scores) / safe_spread, 0.0)


def ot_permutation(scores, valid, temperature, *, max_iterations=1000,
                   threshold=1e-3):
  """Soft permutation ``[..., n, n]`` (position, item) from entropic OT.

  Args:
    scores: float ``[..., n]`` with padded entries already zeroed.
    valid: bool ``[..., n]``; any number of valid entries, zero included.
    temperature: positive float, in squared target spacings (see module doc).
    max_iterations, threshold: passed to ott's Sinkhorn solver.

  Returns:
    float ``[..., n, n]``; on the valid block rows and columns sum to one;
    rows and columns of padded slots are zero (filled in by the caller).
  """
  n = scores.shape[-1]
  sinkhorn_kwargs = _sinkhorn_kwargs(temperature, max_iterations, threshold)

  def one_list(list_scores, list_valid):
    num_valid = jnp.maximum(list_valid.sum(), 1)
    coordinate = _positions_coordinate(list_scores, list_valid)
    coordinate = coordinate * (num_valid - 1) / max(n - 1, 1)
    source = list_valid / num_valid
    target = (jnp.arange(n) < num_valid) / num_valid
    out = _ott("ott.tools.soft_sort").transport_for_sort(
        coordinate, source, target, squashing_fun=lambda z: z,
        epsilon=_epsilon(temperature, n), **sinkhorn_kwargs)
    # Coupling [item, target] carries mass 1/m per valid item. Sinkhorn meets
    # the marginals only up to its threshold, so normalise each position's row
    # exactly (the contract promises unit rows); columns stay within threshold.
    by_position = out.matrix.T
    row_mass = by_position.sum(-1, keepdims=True)
    return by_position / jnp.where(row_mass > 0, row_mass, 1.0)

  flat_scores = scores.reshape(-1, n)
  flat_valid = valid.reshape(-1, n)
  return jax.vmap(one_list)(flat_scores, flat_valid).reshape(scores.shape + (n,))


def ot_ranks_coarse(scores, valid, temperature, num_targets, *,
                    max_iterations=1000, threshold=1e-3):
  """Soft 1-based ranks ``[..., n]`` transported onto ``num_targets`` targets.

  Cheaper than the full permutation when ``num_targets`` is much smaller than
  ``n``: target ``t`` stands for rank ``1 + t (m - 1) / (T - 1)``. Padded
  entries get rank 0 here (the caller overrides them).
  """
  n = scores.shape[-1]
  sinkhorn_kwargs = _sinkhorn_kwargs(temperature, max_iterations, threshold)
  target_rank = jnp.arange(num_targets, dtype=scores.dtype)

  def one_list(list_scores, list_valid):
    num_valid = jnp.maximum(list_valid.sum(), 1)
    coordinate = _positions_coordinate(list_scores, list_valid)
    source = list_valid / num_valid
    target = jnp.full((num_targets,), 1.0 / num_targets)
    out = _ott("ott.tools.soft_sort").transport_for_sort(
        coordinate, source, target, squashing_fun=lambda z: z,
        epsilon=_epsilon(temperature, num_targets), **sinkhorn_kwargs)
    expected_target = out.apply(target_rank, axis=1) * num_valid
    return 1.0 + expected_target * (num_valid - 1) / (num_targets - 1)

  flat = jax.vmap(one_list)(scores.reshape(-1, n), valid.reshape(-1, n))
  return jnp.where(valid, flat.reshape(scores.shape), 0.0)
