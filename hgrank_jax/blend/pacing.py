"""Pacing: PI(D) control of each business's shadow price, and platform governance.

A pacing controller watches a business's windowed cost (or load share) and
moves its shadow price lambda so that the cost tracks the cap C: lambda rises
while the business overspends and falls back to 0 when the cap is slack
(complementary slackness). A minimum-penetration target is the mirrored
constraint: its multiplier mu rises while the business is under its floor.

Controllers are vectorised over businesses: every field of
:class:`ControllerState` has shape ``[B]`` and the update is one jit-safe
function, so a ``lax.scan`` over time steps runs all of them at once.

Governance against the two failure modes of seed 001, each switchable:

* score deflation -- :func:`anchor_update`, a global anchor: a platform-wide
  factor that rescales every submitted score so the mean score stays at a
  value baseline (the mean calibrated value), whatever the shading does;
* coupled-controller oscillation -- damping (derivative action, a low-pass on
  lambda and a cap on its step) in :func:`controller_update`, and shared
  accounting (:func:`shared_errors`): controllers that draw on one traffic pool
  see the pool's common error once, split between them, instead of each
  reacting to all of it.
"""

from typing import NamedTuple

import jax.numpy as jnp


class ControllerGains(NamedTuple):
  """PI(D) gains and damping settings; scalars or ``[B]`` arrays.

  Attributes:
    kp: proportional gain on the relative error.
    ki: integral gain (per step) on the relative error.
    kd: derivative gain on the change of the relative error.
    smoothing: weight of the new lambda in the low-pass ``lam <- (1 - a) lam
      + a lam_raw``; 1 disables the filter.
    max_step: largest change of lambda per update (inf disables).
    max_lambda: upper clamp of lambda.
  """

  kp: float = 0.5
  ki: float = 0.1
  kd: float = 0.0
  smoothing: float = 1.0
  max_step: float = jnp.inf
  max_lambda: float = 1e3


class ControllerState(NamedTuple):
  """Per-business controller state, each ``[B]`` float32."""

  lam: jnp.ndarray
  integral: jnp.ndarray
  previous_error: jnp.ndarray


def init_controller(num_businesses, initial_lambda=0.0):
  """A controller state with lambda = ``initial_lambda`` and no history."""
  zeros = jnp.zeros((num_businesses,), jnp.float32)
  lam = zeros + jnp.asarray(initial_lambda, jnp.float32)
  return ControllerState(lam=lam, integral=zeros, previous_error=zeros)


def relative_error(measured, target, kind):
  """Signed relative error, positive when lambda should rise.

  Args:
    measured: float ``[B]`` windowed cost or load.
    target: float ``[B]`` caps (``kind`` = 1) or floors (``kind`` = -1).
    kind: int ``[B]``: 1 for a cap, -1 for a minimum, 0 for uncontrolled.

  Returns:
    Float ``[B]``: ``kind * (measured - target) / target`` (0 where ``kind`` is 0).
  """
  target = jnp.asarray(target, jnp.float32)
  safe = jnp.where(target > 0, target, 1.0)
  return jnp.where(kind != 0, kind * (measured - target) / safe, 0.0)


def shared_errors(errors, pool):
  """Shared accounting of errors among controllers drawing on one pool.

  Loads of businesses that compete for the same slots are coupled: when one
  is pushed out another fills in. Each controller reacting to its own error
  alone double-counts the pool's common part, which is what makes coupled
  controllers overshoot in turn. Here the common part (the mean error of the
  pool's controlled members) is removed and handed back once, split among
  them.

  Args:
    errors: float ``[B]``.
    pool: bool ``[B]``, members whose errors are accounted jointly (the
      controlled businesses of one traffic pool).

  Returns:
    Float ``[B]``: ``e_b - m + m / |pool|`` on the pool (m the pool's mean
    error), unchanged elsewhere.
  """
  size = jnp.maximum(jnp.sum(pool), 1)
  common = jnp.sum(jnp.where(pool, errors, 0.0)) / size
  return jnp.where(pool, errors - common + common / size, errors)


def controller_update(state, errors, gains, active=None):
  """One PI(D) step on relative errors; lambda stays in ``[0, max_lambda]``.

  Position form ``lam_raw = kp e + ki sum(e) + kd (e - e_prev)``, with the
  integral clamped to the range lambda can take (anti-windup), so lambda
  returns to 0 once a cap goes slack.

  Args:
    state: :class:`ControllerState` with ``[B]`` fields.
    errors: float ``[B]`` from :func:`relative_error` (possibly shared).
    gains: :class:`ControllerGains`.
    active: optional bool ``[B]``; inactive controllers keep lambda at 0.

  Returns:
    The new :class:`ControllerState`.
  """
  errors = jnp.asarray(errors, jnp.float32)
  # Anti-windup: lambda lives in [0, max_lambda], so the integral term is kept
  # in the same range; a slack cap then drains it to 0 instead of winding it
  # ever more negative.
  integral_limit = gains.max_lambda / jnp.maximum(gains.ki, 1e-12)
  integral = jnp.clip(state.integral + errors, 0.0, integral_limit)
  raw = gains.kp * errors + gains.ki * integral + gains.kd * (errors - state.previous_error)
  target_lambda = jnp.clip(raw, 0.0, gains.max_lambda)
  smoothed = state.lam + gains.smoothing * (target_lambda - state.lam)
  step = jnp.clip(smoothed - state.lam, -gains.max_step, gains.max_step)
  lam = jnp.clip(state.lam + step, 0.0, gains.max_lambda)
  if active is not None:
    lam = jnp.where(active, lam, 0.0)
    integral = jnp.where(active, integral, 0.0)
  return ControllerState(lam=lam, integral=integral, previous_error=errors)


def anchor_update(scale, mean_submitted, mean_value, *, rate=0.5):
  """Global anchor: move the platform scale so scores stay on the value baseline.

  The platform multiplies every submitted score by ``scale``. After each step
  it compares the mean anchored score ``scale * mean_submitted`` with the mean
  calibrated value of the same opportunities and corrects multiplicatively,
  ``scale <- scale * (mean_value / (scale * mean_submitted)) ** rate``. A common
  factor leaves every comparison unchanged, so allocation is untouched; what
  the anchor fixes is the absolute scale that thresholds and reports rely on.

  Args:
    scale: float scalar, current factor.
    mean_submitted: float scalar, mean submitted (pre-anchor) score of the step.
    mean_value: float scalar, mean calibrated value over the same entries.
    rate: fraction of the log-gap closed per step, in (0, 1].

  Returns:
    The new scale (float scalar).
  """
  anchored = jnp.maximum(scale * mean_submitted, 1e-30)
  return scale * (jnp.maximum(mean_value, 1e-30) / anchored) ** rate


def validate_targets(caps=None, floors=None, *, total=1.0):
  """Checks that load targets can be met together; raises ``ValueError`` if not.

  Shares of one pool of slots sum to ``total``: the floors must fit inside it
  (sum of floors <= total) and, when every business has a cap, the caps must
  cover it (sum of caps >= total); a business's floor may not exceed its cap.

  Args:
    caps: optional float ``[B]`` of load caps (``inf`` or NaN for none).
    floors: optional float ``[B]`` of minimum shares (0 or NaN for none).
    total: the share the businesses split (1 when every slot is filled).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  caps_array = None if caps is None else np.nan_to_num(np.asarray(caps, float), nan=np.inf)
  floors_array = None if floors is None else np.nan_to_num(np.asarray(floors, float), nan=0.0)
  if floors_array is not None:
    if np.any(floors_array < 0):
      raise ValueError(f"minimum shares must be non-negative, got {floors_array}")
    if floors_array.sum() > total + 1e-9:
      raise ValueError(f"minimum shares sum to {floors_array.sum():.3f} > {total}: no allocation "
                       "can give every business its floor")
  if caps_array is not None:
    if np.any(caps_array <= 0):
      raise ValueError(f"caps must be positive, got {caps_array}")
    if np.all(np.isfinite(caps_array)) and caps_array.sum() < total - 1e-9:
      raise ValueError(f"caps sum to {caps_array.sum():.3f} < {total}: the slots cannot all be "
                       "filled without breaking a cap")
  if caps_array is not None and floors_array is not None and np.any(floors_array > caps_array):
    raise ValueError("a business's minimum share exceeds its cap")
