"""Score shading: a business's blending score as an implicit first-price bid.

For one business, seed 001 writes pacing as

    max_s  sum_i V_i F(s_i)   s.t.  (1/n) sum_i s_i F(s_i) <= C,

whose Lagrangian gives the per-opportunity decision
``s*_i = argmax_s F(s | ctx_i) (V_i - lambda s)``, with the shadow price lambda
tracked online by a pacing controller (``pacing.py``). A score never exceeds the
value (``s <= V``, so lambda = 0, a slack cap, means no shading at all).

The win-rate model F comes by one of two routes:

* direct: ``P(win | s, ctx)`` fitted as a logistic curve in ``log s`` from
  logged (score, won) pairs -- Platt scaling on the log score, so it reuses
  :func:`hgrank_jax.blend.calibration.fit_platt`;
* landscape: the distribution of the competitors' best score, here log-normal
  per context, from which ``F(s) = P(best competitor < s)`` follows in closed
  form (the idea of Deep Landscape Forecasting).

A win-rate model is a function ``win_rate(scores, params)`` applied elementwise
with ``params`` a pytree of arrays broadcastable against ``scores``.
"""

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from hgrank_jax.blend import calibration

_GOLDEN = 0.6180339887498949


def lognormal_win_rate(scores, params):
  """Landscape route: ``F(s) = Phi((log s - mu) / sigma)`` for log-normal competition."""
  log_scores = jnp.log(jnp.maximum(scores, 1e-30))
  return ndtr((log_scores - params["mu"]) / params["sigma"])


def logistic_win_rate(scores, params):
  """Direct route: ``F(s) = sigmoid(slope * log s + intercept)``."""
  return calibration.apply_platt(params, jnp.log(jnp.maximum(scores, 1e-30)))


def fit_landscape(best_competitor, *, where=None, context=None, num_contexts=1, min_sigma=1e-3):
  """Log-normal fit of the competitors' best score, per context.

  Args:
    best_competitor: float ``[n]``, positive: the highest score among the other
      businesses at each observed opportunity.
    where: optional bool ``[n]`` of observations to use.
    context: optional int ``[n]`` in ``[0, num_contexts)``.
    num_contexts: static int.
    min_sigma: floor on sigma so a degenerate window cannot give a step F.

  Returns:
    ``{"mu": [num_contexts], "sigma": [num_contexts]}`` (maximum likelihood);
    a context without observations gets mu = 0, sigma = 1.
  """
  logs = jnp.log(jnp.maximum(jnp.asarray(best_competitor, jnp.float32), 1e-30))
  weights = jnp.ones_like(logs) if where is None else jnp.asarray(where, logs.dtype)
  context = jnp.zeros(logs.shape, jnp.int32) if context is None else jnp.asarray(context)
  count = jax.ops.segment_sum(weights, context, num_contexts)
  safe = jnp.maximum(count, 1e-12)
  mu = jax.ops.segment_sum(weights * logs, context, num_contexts) / safe
  second = jax.ops.segment_sum(weights * logs ** 2, context, num_contexts) / safe
  sigma = jnp.sqrt(jnp.maximum(second - mu ** 2, min_sigma ** 2))
  return {"mu": jnp.where(count > 0, mu, 0.0), "sigma": jnp.where(count > 0, sigma, 1.0)}


def fit_direct_win_rate(scores, won, *, where=None, num_iterations=30):
  """Logistic win-rate curve in ``log s`` from logged (score, won) pairs.

  Returns:
    Platt parameters ``{"slope": [], "intercept": []}`` for :func:`logistic_win_rate`.
  """
  log_scores = jnp.log(jnp.maximum(jnp.asarray(scores, jnp.float32), 1e-30))
  return calibration.fit_platt(log_scores, won, where=where, num_iterations=num_iterations,
                               l2=1e-4)


def shading_objective(scores, values, lam, win_rate, params):
  """``F(s)(V - lambda s)``: the Lagrangian payoff of bidding ``s``."""
  return win_rate(scores, params) * (values - lam * scores)


@functools.partial(jax.jit, static_argnames=("win_rate", "num_grid", "num_refine"))
def shade(values, lam, win_rate, params, *, low_fraction=1e-3, num_grid=48, num_refine=40):
  """Optimal shaded score ``argmax_{s in [low V, V]} F(s | ctx)(V - lambda s)``.

  A coarse grid, log-spaced over ``[low_fraction V, V]``, finds the best cell
  (the payoff may have several local maxima for a bumpy F); golden-section
  search then refines inside the two cells around it.

  Args:
    values: float ``[...]``, positive values V.
    lam: float, broadcastable to ``values``; the shadow price (>= 0).
    win_rate: static function ``(scores, params) -> F``, elementwise.
    params: pytree of arrays broadcastable against ``values``.
    low_fraction: smallest score considered, as a fraction of V.
    num_grid, num_refine: static sizes of the coarse grid and of the golden
      section (each step shrinks the bracket by 0.618).

  Returns:
    Float ``[...]`` shaded scores in ``[low_fraction V, V]``; equals V when
    lambda is 0 and F is non-decreasing.
  """
  values = jnp.asarray(values, jnp.float32)
  lam = jnp.broadcast_to(jnp.asarray(lam, values.dtype), values.shape)
  log_low = jnp.log(jnp.maximum(values * low_fraction, 1e-30))
  log_high = jnp.log(jnp.maximum(values, 1e-30))
  fractions = jnp.linspace(0.0, 1.0, num_grid, dtype=values.dtype)
  grid = log_low[..., None] + fractions * (log_high - log_low)[..., None]
  expanded = jax.tree.map(lambda p: jnp.asarray(p)[..., None], params)
  payoff = shading_objective(jnp.exp(grid), values[..., None], lam[..., None], win_rate, expanded)
  best = jnp.argmax(payoff, axis=-1)
  step = (log_high - log_low) / (num_grid - 1)
  best_log = jnp.take_along_axis(grid, best[..., None], axis=-1)[..., 0]
  left = jnp.maximum(best_log - step, log_low)
  right = jnp.minimum(best_log + step, log_high)

  def payoff_at(log_score):
    return shading_objective(jnp.exp(log_score), values, lam, win_rate, params)

  def refine(_, bracket):
    left, right = bracket
    inner_left = right - _GOLDEN * (right - left)
    inner_right = left + _GOLDEN * (right - left)
    keep_left = payoff_at(inner_left) >= payoff_at(inner_right)
    return jnp.where(keep_left, left, inner_left), jnp.where(keep_left, inner_right, right)

  left, right = jax.lax.fori_loop(0, num_refine, refine, (left, right))
  refined = 0.5 * (left + right)
  # Keep the grid point when refinement did not beat it (flat payoff, e.g. F = 0).
  use_refined = payoff_at(refined) >= payoff_at(best_log)
  return jnp.exp(jnp.where(use_refined, refined, best_log))


def expected_outcome(lam, values, win_rate, params, **shade_options):
  """Mean cost ``s* F(s*)``, value ``V F(s*)`` and win rate ``F(s*)`` at price ``lam``.

  Args:
    lam: float scalar shadow price.
    values: float ``[n]`` sample of opportunity values.
    win_rate, params: the win-rate model (params broadcast against values).

  Returns:
    ``(cost, value, win_rate)`` float scalars, per opportunity.
  """
  scores = shade(values, lam, win_rate, params, **shade_options)
  wins = win_rate(scores, params)
  return jnp.mean(scores * wins), jnp.mean(values * wins), jnp.mean(wins)


def optimal_lambda(values, cap, win_rate, params, *, upper=None, num_bisections=60,
                   **shade_options):
  """lambda* with mean cost at lambda* equal to ``cap``, by bisection.

  The mean cost ``E[s*(lambda) F(s*(lambda))]`` does not increase with lambda,
  so bisection applies. Returns 0 when the cap is slack at lambda = 0 (no
  shading needed), the shadow price's complementary slackness.

  Args:
    values: float ``[n]`` value sample.
    cap: float C, the allowed mean cost per opportunity.
    win_rate, params: the win-rate model.
    upper: starting upper bracket; doubled until the cost falls below the cap.
    num_bisections: halvings of the bracket.

  Returns:
    Python float lambda*.
  """
  def cost(lam):
    return float(expected_outcome(lam, values, win_rate, params, **shade_options)[0])

  if cost(0.0) <= cap:
    return 0.0
  high = 1.0 if upper is None else float(upper)
  while cost(high) > cap:
    high *= 2.0
    if high > 1e12:
      raise ValueError(f"cap {cap} cannot be met by shading: cost stays above it for any lambda")
  low = 0.0
  for _ in range(num_bisections):
    middle = 0.5 * (low + high)
    if cost(middle) > cap:
      low = middle
    else:
      high = middle
  return 0.5 * (low + high)
