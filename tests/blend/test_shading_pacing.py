"""Shading against grid search and closed forms; pacing against bisection and known plants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hgrank_jax.blend import pacing, shading

LANDSCAPE = {"mu": jnp.float32(-0.4), "sigma": jnp.float32(0.6)}


def test_shade_matches_dense_grid_search():
  rng = np.random.default_rng(0)
  values = rng.lognormal(0.0, 0.5, size=64).astype(np.float32)
  for lam in (0.3, 1.0, 2.5):
    shaded = np.asarray(shading.shade(values, lam, shading.lognormal_win_rate, LANDSCAPE))
    for value, score in zip(values, shaded):
      grid = np.exp(np.linspace(np.log(1e-3 * value), np.log(value), 200_001))
      payoff = stats.norm.cdf((np.log(grid) + 0.4) / 0.6) * (value - lam * grid)
      best = grid[np.argmax(payoff)]
      payoff_at = stats.norm.cdf((np.log(score) + 0.4) / 0.6) * (value - lam * score)
      assert payoff_at >= payoff.max() - 1e-5 * max(abs(payoff.max()), 1e-6)
      np.testing.assert_allclose(score, best, rtol=2e-3)


def test_shade_without_price_bids_value_and_shades_more_with_price():
  values = jnp.array([0.5, 1.0, 2.0])
  np.testing.assert_allclose(shading.shade(values, 0.0, shading.lognormal_win_rate, LANDSCAPE),
                             values, rtol=1e-6)
  low = shading.shade(values, 0.5, shading.lognormal_win_rate, LANDSCAPE)
  high = shading.shade(values, 2.0, shading.lognormal_win_rate, LANDSCAPE)
  assert np.all(np.asarray(high) < np.asarray(low)) and np.all(np.asarray(low) <= values)


def test_landscape_fit_is_lognormal_mle_per_context():
  rng = np.random.default_rng(1)
  context = rng.integers(0, 2, 20_000)
  best = np.where(context == 0, rng.lognormal(-1.0, 0.3, 20_000), rng.lognormal(0.5, 0.8, 20_000))
  params = shading.fit_landscape(best, context=context, num_contexts=2)
  for c in range(2):
    logs = np.log(best[context == c])
    np.testing.assert_allclose(params["mu"][c], logs.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params["sigma"][c], logs.std(), rtol=1e-4)


def test_direct_route_recovers_win_curve():
  rng = np.random.default_rng(2)
  scores = rng.lognormal(-0.4, 0.8, 30_000)
  won = rng.random(30_000) < stats.norm.cdf((np.log(scores) + 0.4) / 0.6)
  params = shading.fit_direct_win_rate(scores, won.astype(np.float32))
  probe = np.exp(np.linspace(-2, 1, 20))
  np.testing.assert_allclose(shading.logistic_win_rate(probe, params),
                             stats.norm.cdf((np.log(probe) + 0.4) / 0.6), atol=0.03)


def _values(n=4000, seed=3):
  return jnp.asarray(np.random.default_rng(seed).lognormal(0.0, 0.5, n), jnp.float32)


def test_optimal_lambda_meets_cap():
  values = _values()
  unshaded_cost = float(shading.expected_outcome(0.0, values, shading.lognormal_win_rate,
                                                 LANDSCAPE)[0])
  cap = 0.5 * unshaded_cost
  lam = shading.optimal_lambda(values, cap, shading.lognormal_win_rate, LANDSCAPE)
  cost = float(shading.expected_outcome(lam, values, shading.lognormal_win_rate, LANDSCAPE)[0])
  np.testing.assert_allclose(cost, cap, rtol=1e-4)
  assert shading.optimal_lambda(values, 2 * unshaded_cost, shading.lognormal_win_rate,
                                LANDSCAPE) == 0.0


def test_shading_beats_uniform_scaling_at_equal_cost():
  values = _values()
  win = shading.lognormal_win_rate
  cap = 0.5 * float(shading.expected_outcome(0.0, values, win, LANDSCAPE)[0])
  lam = shading.optimal_lambda(values, cap, win, LANDSCAPE)
  _, shaded_value, _ = shading.expected_outcome(lam, values, win, LANDSCAPE)
  # Unshaded bidding that meets the same cap: one factor on every score, by bisection.
  low, high = 0.0, 1.0
  for _ in range(60):
    kappa = 0.5 * (low + high)
    cost = float(jnp.mean(kappa * values * win(kappa * values, LANDSCAPE)))
    low, high = (kappa, high) if cost < cap else (low, kappa)
  scaled_value = float(jnp.mean(values * win(kappa * values, LANDSCAPE)))
  assert float(shaded_value) > scaled_value * 1.005


def test_pi_controller_converges_to_bisection_lambda():
  """Stream of opportunities with a closed-form F: lambda -> lambda* within 5%.

  Run with expected wins and with realised (Bernoulli) wins; the flag is traced
  so both share one compilation.
  """
  values = _values(20_000, seed=4)
  win = shading.lognormal_win_rate
  cap = 0.6 * float(shading.expected_outcome(0.0, values, win, LANDSCAPE)[0])
  lam_star = shading.optimal_lambda(values, cap, win, LANDSCAPE)
  gains = pacing.ControllerGains(kp=0.3, ki=0.15)

  def step(carry, inputs):
    state, window = carry
    key, noisy = inputs
    batch = jax.random.choice(key, values, (256,))
    scores = shading.shade(batch, state.lam[0], win, LANDSCAPE)
    expected = win(scores, LANDSCAPE)
    realised = (jax.random.uniform(jax.random.fold_in(key, 1), expected.shape)
                < expected).astype(jnp.float32)
    wins = jnp.where(noisy, realised, expected)
    window = 0.9 * window + 0.1 * jnp.mean(scores * wins)
    errors = pacing.relative_error(window[None], jnp.array([cap]), jnp.array([1]))
    return (pacing.controller_update(state, errors, gains), window), state.lam[0]

  @jax.jit
  def trajectory(noisy):
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    flags = jnp.broadcast_to(noisy, (400,))
    return jax.lax.scan(step, (pacing.init_controller(1), jnp.float32(cap)), (keys, flags))[1]

  for noisy in (False, True):
    settled = float(jnp.mean(trajectory(noisy)[-150:]))
    np.testing.assert_allclose(settled, lam_star, rtol=0.05, err_msg=f"noisy={noisy}")


def test_pi_drives_first_order_plant_to_set_point():
  # Plant: load relaxes toward 1 / (1 + lambda); set point 0.4 needs lambda = 1.5.
  gains = pacing.ControllerGains(kp=0.5, ki=0.2)
  state, load = pacing.init_controller(1), 1.0
  for _ in range(300):
    load += 0.5 * (1.0 / (1.0 + float(state.lam[0])) - load)
    errors = pacing.relative_error(jnp.array([load]), jnp.array([0.4]), jnp.array([1]))
    state = pacing.controller_update(state, errors, gains)
  np.testing.assert_allclose(load, 0.4, rtol=1e-3)
  np.testing.assert_allclose(state.lam[0], 1.5, rtol=1e-2)


def test_slack_cap_returns_lambda_to_zero_and_floor_is_mirrored():
  gains = pacing.ControllerGains(kp=0.5, ki=0.2)
  state = pacing.ControllerState(lam=jnp.array([2.0, 0.0]), integral=jnp.array([10.0, 0.0]),
                                 previous_error=jnp.zeros(2))
  for _ in range(100):
    # Business 0 under its cap (slack); business 1 below its floor.
    errors = pacing.relative_error(jnp.array([0.1, 0.1]), jnp.array([0.3, 0.2]),
                                   jnp.array([1, -1]))
    state = pacing.controller_update(state, errors, gains)
  assert float(state.lam[0]) == 0.0
  assert float(state.lam[1]) > 1.0


def test_damping_limits_steps():
  gains = pacing.ControllerGains(kp=5.0, ki=1.0, smoothing=0.2, max_step=0.05)
  state = pacing.controller_update(pacing.init_controller(2), jnp.array([1.0, 0.5]), gains)
  assert np.all(np.asarray(state.lam) <= 0.05 + 1e-7)


def test_shared_errors_remove_double_counting():
  errors = jnp.array([0.4, 0.2, 1.0])
  pool = jnp.array([True, True, False])
  np.testing.assert_allclose(pacing.shared_errors(errors, pool), [0.25, 0.05, 1.0], rtol=1e-6)


def test_anchor_converges_to_value_baseline():
  scale = jnp.float32(1.0)
  for _ in range(40):
    scale = pacing.anchor_update(scale, 0.3, 0.75, rate=0.5)
  np.testing.assert_allclose(scale * 0.3, 0.75, rtol=1e-5)


def test_infeasible_targets_raise():
  with pytest.raises(ValueError, match="minimum shares sum"):
    pacing.validate_targets(floors=[0.6, 0.5])
  with pytest.raises(ValueError, match="caps sum"):
    pacing.validate_targets(caps=[0.3, 0.3, 0.3])
  with pytest.raises(ValueError, match="exceeds its cap"):
    pacing.validate_targets(caps=[0.2, np.inf], floors=[0.3, 0.0])
  pacing.validate_targets(caps=[0.15, np.inf, 0.3], floors=[0.0, 0.2, 0.1])
  with pytest.raises(ValueError, match="cannot be met"):
    shading.optimal_lambda(_values(100), -1.0, shading.lognormal_win_rate, LANDSCAPE)
