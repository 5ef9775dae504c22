"""Traffic simulator for Layer 2: days of requests competing across business queues.

Built on the foundation simulator (:mod:`hgrank_jax.data.sim.world`): its users,
items, business lines and true click model. On top of it this module adds what
blending needs:

* a request pool: for each sampled user, one queue per business line, the top
  ``queue_length`` of that line's candidates ranked by the line's own imperfect
  ranker, with each line's raw score on its own miscalibrated scale, the true
  click probability and the value of a click;
* per (user segment, business) taste shifts that no ranker sees, which the
  personalised multipliers are there to learn;
* a stream: simulated days of time steps with a diurnal request volume and
  supply shocks (a business's queues cut short for a while);
* :func:`make_step`, one jit-compiled time step: calibrate, multiply, shade,
  merge under page rules, account wins, update landscapes, controllers and the
  anchor. ``run`` in ``experiment.py`` scans it over the day.

All arrays of the pool are numpy; a step gathers the requests it needs.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.blend import calibration, mixer, pacing, shading
from hgrank_jax.data.sim.config import SimulatorConfig
from hgrank_jax.data.sim.world import build_world, true_scores


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))


# Each line's raw score as a function of its ranker's estimated click logit z:
# all look like probabilities, none is calibrated, and they disagree in scale.
RAW_SCORE_TRANSFORMS = {
    "article": lambda z: _sigmoid(1.6 * z + 1.0),     # overconfident and inflated
    "short_video": lambda z: np.sqrt(_sigmoid(z)),     # a square-root scale
    "live": lambda z: _sigmoid(0.6 * z - 0.5),        # underconfident, deflated
    "ad": lambda z: _sigmoid(z + 1.2),                # inflated
}


@dataclasses.dataclass(frozen=True)
class TrafficConfig:
  """Sizes and dynamics of the simulated traffic.

  ``caps``/``floors`` are per business line (NaN: none) as shares of filled
  slots, judged on a sliding window of ``window_steps`` steps; controllers act
  on that window, or with shared accounting on the platform's per-step ledger
  (an exponential average with time constant ``feedback_steps``): the
  window's lag is what makes independent controllers overshoot.
  With ``cap_measure="spend"`` a cap bounds the score a line spends per
  filled slot (the sum of its winning submitted scores over slots, the seed's
  cost constraint) instead of its share of slots; floors stay on load.
  ``shocks`` are ``(business, start_day, duration_days, kept_fraction)``
  cutting that line's queues to ``kept_fraction`` of their length.
  """

  seed: int = 0
  num_users: int = 2000
  num_items: int = 5000
  pool_requests: int = 16_000
  candidates_per_queue: int = 30
  queue_length: int = 6
  num_slots: int = 8
  ranker_noise: float = 0.6
  segment_effect_sigma: float = 0.5
  num_days: int = 3
  steps_per_day: int = 96
  max_requests_per_step: int = 192
  trough_volume: float = 0.3
  warmup_days: float = 0.75
  window_steps: int = 8
  feedback_steps: float = 4.0
  cap_measure: str = "load"
  monetized: tuple[str, ...] = ("live", "ad")
  max_monetized: int = 3
  no_adjacent_monetized: bool = True
  caps: tuple[float, ...] = (float("nan"), float("nan"), 0.16, 0.12)
  floors: tuple[float, ...] = (0.2, 0.0, 0.0, 0.0)
  shocks: tuple[tuple[str, float, float, float], ...] = (("live", 1.5, 0.3, 0.0),)
  log_impressions: int = 40_000

  @property
  def num_steps(self) -> int:
    return self.num_days * self.steps_per_day


class RequestPool(NamedTuple):
  """Pre-drawn requests; ``R`` requests, ``B`` businesses, ``q`` queue length.

  Attributes:
    raw: float32 ``[R, B, q]`` each line's raw score, queue order.
    true_prob: float32 ``[R, B, q]`` true click probability at the top slot.
    item_value: float32 ``[R, B, q]`` value of a click.
    segment: int32 ``[R]`` user segment (top-level cluster of the user trie).
    user: int32 ``[R]``.
  """

  raw: np.ndarray
  true_prob: np.ndarray
  item_value: np.ndarray
  segment: np.ndarray
  user: np.ndarray


def build_pool(config: TrafficConfig, num_requests=None, seed_offset=0):
  """Draws a request pool and the world's business lines.

  Returns:
    ``(pool, business_lines, num_segments, segment_effect [S, B])``.
  """
  world = build_world(SimulatorConfig(seed=config.seed, num_users=config.num_users,
                                      num_items=config.num_items, num_requests=0,
                                      num_list_requests=0))
  lines = world.config.business_lines
  num_segments = world.config.trie_branching
  rng = np.random.default_rng([config.seed, 77, seed_offset])
  effect = np.random.default_rng([config.seed, 78]).normal(
      0.0, config.segment_effect_sigma, (num_segments, len(lines)))
  size = config.pool_requests if num_requests is None else num_requests
  users = world.sample_users(rng, size)
  segment = world.user_cluster[users, 0].astype(np.int32)
  shape = (size, len(lines), config.queue_length)
  raw, true_prob, item_value = (np.zeros(shape, np.float32) for _ in range(3))
  for b, line in enumerate(lines):
    line_items = np.flatnonzero(world.item_business == b)
    candidates = line_items[rng.integers(0, len(line_items), (size, config.candidates_per_queue))]
    logit = true_scores(world, users[:, None], candidates)["logit"]
    estimate = logit + rng.normal(0.0, config.ranker_noise, logit.shape)
    top = np.argsort(-estimate, axis=1)[:, :config.queue_length]
    pick = lambda a: np.take_along_axis(a, top, axis=1)  # pylint: disable=cell-var-from-lambda
    raw[:, b] = RAW_SCORE_TRANSFORMS.get(line, _sigmoid)(pick(estimate))
    true_prob[:, b] = _sigmoid(pick(logit) + effect[segment, b][:, None])
    item_value[:, b] = world.item_value[pick(candidates)]
  pool = RequestPool(raw=raw, true_prob=true_prob, item_value=item_value, segment=segment,
                     user=users)
  return pool, lines, num_segments, effect


def logged_impressions(pool, config: TrafficConfig, seed=1):
  """Logged top-slot impressions with click outcomes, for calibration and multipliers.

  Returns:
    dict of numpy ``[n]`` arrays: raw, click, business, segment, item_value.
  """
  rng = np.random.default_rng([config.seed, 79, seed])
  n = config.log_impressions
  request = rng.integers(0, pool.raw.shape[0], n)
  business = rng.integers(0, pool.raw.shape[1], n)
  position = rng.integers(0, pool.raw.shape[2], n)
  prob = pool.true_prob[request, business, position]
  return {"raw": pool.raw[request, business, position], "click": (rng.random(n) < prob).astype(
      np.float32), "business": business.astype(np.int32), "segment": pool.segment[request],
          "item_value": pool.item_value[request, business, position]}


def request_schedule(config: TrafficConfig, lines, seed=2):
  """Per step: active request mask ``[T, Rmax]``, pool indices and queue cuts.

  Volume follows a daily cosine between ``trough_volume`` (04:00) and 1 (16:00)
  times ``max_requests_per_step``; shocks cut a line's queue length.

  Returns:
    ``(pool_index int32 [T, Rmax], active bool [T, Rmax], queue_cut int32 [T, B],
    volume float [T])``.
  """
  rng = np.random.default_rng([config.seed, 80, seed])
  steps = np.arange(config.num_steps)
  hour = 24.0 * (steps % config.steps_per_day) / config.steps_per_day
  volume = config.trough_volume + (1 - config.trough_volume) * 0.5 * (
      1 - np.cos(2 * np.pi * (hour - 4.0) / 24.0))
  counts = np.maximum(1, np.round(volume * config.max_requests_per_step)).astype(int)
  active = np.arange(config.max_requests_per_step)[None, :] < counts[:, None]
  pool_index = rng.integers(0, config.pool_requests, (config.num_steps,
                                                      config.max_requests_per_step))
  queue_cut = np.full((config.num_steps, len(lines)), config.queue_length, np.int32)
  day = steps / config.steps_per_day
  for line, start, duration, kept in config.shocks:
    hit = (day >= start) & (day < start + duration)
    queue_cut[hit, lines.index(line)] = int(round(kept * config.queue_length))
  return pool_index.astype(np.int32), active, queue_cut, volume


class Policy(NamedTuple):
  """What a blending variant does (static switches and fitted parameters).

  Attributes:
    calibrate: use calibrated probabilities (else raw scores compete).
    calibration_method: static method name.
    calibration_params: per-business params stacked on a leading ``[B]`` axis.
    alpha: float ``[S, B]`` multipliers (ones for none).
    pacing: run the controllers.
    shading: shade with ``F(s)(V - lambda s)``; otherwise a paced business bids
      ``V (1 + mu) / (1 + lambda)`` (uniform throttle, no shading).
    win_model: "landscape" or "direct".
    anchor: global anchor on the score scale (governance against deflation).
    shared_accounting: controllers read the platform's shared per-step ledger
      (an exponential average with time constant ``feedback_steps``) instead
      of each business's own lagged sliding window; with ``split_common`` the
      pool's common error is also split among the binding controllers.
    split_common: see above.
    gains: controller gains (damping lives in them: kd, smoothing, max_step).
  """

  calibrate: bool
  calibration_method: str
  calibration_params: object
  alpha: np.ndarray
  pacing: bool
  shading: bool
  win_model: str
  anchor: bool
  shared_accounting: bool
  gains: pacing.ControllerGains
  split_common: bool = False


class StepState(NamedTuple):
  """What one time step hands the next (all jnp arrays; B businesses, W window)."""

  controller: pacing.ControllerState
  wins_window: jnp.ndarray      # [W, B]
  slots_window: jnp.ndarray     # [W]
  landscape_stats: jnp.ndarray  # [B, 3]: discounted count, sum log, sum log^2
  direct_params: dict           # platt params with [B] leaves
  scale: jnp.ndarray            # anchor factor
  feedback_load: jnp.ndarray    # [B] exponential average the controllers see


def init_state(num_businesses, window_steps):
  """Fresh :class:`StepState`: lambda 0, empty window, scale 1, no ledger yet."""
  zeros = jnp.zeros((num_businesses,), jnp.float32)
  return StepState(controller=pacing.init_controller(num_businesses),
                   wins_window=jnp.zeros((window_steps, num_businesses), jnp.float32),
                   slots_window=jnp.zeros((window_steps,), jnp.float32),
                   landscape_stats=jnp.zeros((num_businesses, 3), jnp.float32),
                   direct_params={"slope": zeros + 3.0, "intercept": zeros},
                   scale=jnp.float32(1.0), feedback_load=jnp.full((num_businesses,), jnp.nan))


def targets_of(config: TrafficConfig, num_businesses):
  """Controller kinds ``[B]`` (1 cap, -1 floor, 0 none) and targets ``[B]``."""
  caps = np.asarray(config.caps, np.float64)
  floors = np.nan_to_num(np.asarray(config.floors, np.float64), nan=0.0)
  if caps.shape != (num_businesses,) or floors.shape != (num_businesses,):
    raise ValueError(f"caps and floors need one entry per business line ({num_businesses})")
  if config.cap_measure not in ("load", "spend"):
    raise ValueError(f"cap_measure must be 'load' or 'spend', got {config.cap_measure!r}")
  # Load caps and floors split one pool of slots and must fit together; spend
  # caps are in score units, so only the floors are checked then.
  pacing.validate_targets(caps if config.cap_measure == "load" else None, floors)
  kind = np.where(np.isfinite(caps), 1, np.where(floors > 0, -1, 0)).astype(np.int32)
  target = np.where(kind == 1, caps, np.where(kind == -1, floors, 1.0)).astype(np.float32)
  return kind, target


def run_stream(policy: Policy, config: TrafficConfig, pool: RequestPool, lines, schedule):
  """Runs ``policy`` over the whole schedule; one jit-compiled ``lax.scan``.

  Args:
    policy: the blending variant.
    config: traffic configuration.
    pool: request pool from :func:`build_pool`.
    lines: business line names.
    schedule: output of :func:`request_schedule`.

  Returns:
    dict of numpy arrays over steps ``[T]`` or ``[T, B]``: step_load,
    window_load (both per filled slot: slots won, or score spent for spend
    caps), lam, engagement, value, requests, slots, mean_score,
    mean_value, scale, business_value, spend, wins.
  """
  num_businesses = len(lines)
  kind, target = targets_of(config, num_businesses)
  monetized = np.isin(np.asarray(lines), config.monetized)
  position_bias = jnp.asarray(SimulatorConfig().position_bias(config.num_slots), jnp.float32)
  raw_all, prob_all = jnp.asarray(pool.raw), jnp.asarray(pool.true_prob)
  value_all, segment_all = jnp.asarray(pool.item_value), jnp.asarray(pool.segment)
  alpha = jnp.asarray(policy.alpha, jnp.float32)
  controlled = jnp.asarray(kind != 0)
  queue_positions = jnp.arange(config.queue_length)

  def win_model(state):
    if policy.win_model == "landscape":
      count, sum_log, sum_sq = (state.landscape_stats[:, i] for i in range(3))
      mu = sum_log / jnp.maximum(count, 1e-6)
      sigma = jnp.sqrt(jnp.maximum(sum_sq / jnp.maximum(count, 1e-6) - mu ** 2, 1e-4))
      # F in submitted units: the platform multiplies by the anchor scale.
      return shading.lognormal_win_rate, {"mu": (mu - jnp.log(state.scale))[None, :, None],
                                          "sigma": sigma[None, :, None]}
    params = state.direct_params
    return shading.logistic_win_rate, {
        "slope": params["slope"][None, :, None],
        "intercept": (params["intercept"] + params["slope"] * jnp.log(state.scale))[None, :, None]}

  def step(state, inputs):
    pool_index, active, queue_cut = inputs
    raw, prob = raw_all[pool_index], prob_all[pool_index]
    item_value, segment = value_all[pool_index], segment_all[pool_index]
    where = (queue_positions[None, None, :] < queue_cut[None, :, None]) & active[:, None, None]
    if policy.calibrate:
      calibrated = jax.vmap(lambda p, r: calibration.APPLY[policy.calibration_method](p, r),
                            in_axes=(0, 1), out_axes=1)(policy.calibration_params, raw)
      value = mixer.mix_scores(calibrated, alpha[segment]) * item_value
    else:
      value = raw  # raw scores compete as they are
    lam = jnp.where(kind == 1, state.controller.lam, 0.0) if policy.pacing else jnp.zeros(
        num_businesses)
    boost = jnp.where(kind == -1, state.controller.lam, 0.0) if policy.pacing else jnp.zeros(
        num_businesses)
    boosted = value * (1.0 + boost)[None, :, None]
    if policy.pacing and policy.shading:
      win_rate, params = win_model(state)
      submitted = shading.shade(boosted, lam[None, :, None], win_rate, params, num_grid=24,
                                num_refine=16)
    else:
      submitted = boosted / (1.0 + lam)[None, :, None]
    scores = state.scale * submitted
    business, position, heads = mixer.merge_queues(
        scores, config.num_slots, where=where, monetized=monetized,
        max_monetized=config.max_monetized,
        no_adjacent_monetized=config.no_adjacent_monetized, validate=False)
    filled = business >= 0
    won = jax.nn.one_hot(business, num_businesses) * filled[..., None]
    wins, slots = won.sum((0, 1)), filled.sum().astype(jnp.float32)
    rows = jnp.arange(business.shape[0])[:, None]
    chosen_prob = prob[rows, jnp.maximum(business, 0), jnp.maximum(position, 0)]
    chosen_value = item_value[rows, jnp.maximum(business, 0), jnp.maximum(position, 0)]
    clicks = jnp.where(filled, chosen_prob * position_bias[None, :], 0.0)
    # Per business: value of its clicks and score spent on its won slots.
    business_value = ((clicks * chosen_value)[..., None] * won).sum((0, 1))
    chosen_score = jnp.take_along_axis(heads, jnp.maximum(business, 0)[..., None], axis=-1)[..., 0]
    spend = (jnp.where(filled, chosen_score, 0.0)[..., None] * won).sum((0, 1))

    # What each business saw at each slot: its own head and the best other head.
    others = jnp.where(jnp.eye(num_businesses, dtype=bool), -jnp.inf, heads[..., None, :])
    best_other = others.max(-1)
    observed = jnp.isfinite(heads) & jnp.isfinite(best_other)
    log_other = jnp.log(jnp.maximum(jnp.where(observed, best_other, 1.0), 1e-30))
    fresh = jnp.stack([observed.sum((0, 1)), (observed * log_other).sum((0, 1)),
                       (observed * log_other ** 2).sum((0, 1))], axis=-1)
    landscape_stats = 0.8 * state.landscape_stats + fresh
    direct_params = state.direct_params
    if policy.pacing and policy.shading and policy.win_model == "direct":
      log_own = jnp.log(jnp.maximum(jnp.where(observed, heads, 1.0), 1e-30))
      flat = lambda a: a.reshape(-1, num_businesses)  # pylint: disable=unnecessary-lambda-assignment
      fitted = jax.vmap(lambda x, y, w: calibration.fit_platt(x, y, where=w, num_iterations=8,
                                                              l2=1e-3), in_axes=1)(
          flat(log_own), flat(won), flat(observed))
      enough = observed.sum((0, 1)) > 20
      direct_params = jax.tree.map(
          lambda old, new: jnp.where(enough, 0.8 * old + 0.2 * new, old), direct_params, fitted)

    # What a target counts: slots won, or for spend caps the submitted score
    # spent on them (the anchor's common factor taken out).
    usage = wins
    if config.cap_measure == "spend":
      usage = jnp.where(kind == 1, spend / state.scale, wins)
    wins_window = jnp.roll(state.wins_window, 1, axis=0).at[0].set(usage)
    slots_window = jnp.roll(state.slots_window, 1).at[0].set(slots)
    load = wins_window.sum(0) / jnp.maximum(slots_window.sum(), 1.0)
    step_load = usage / jnp.maximum(slots, 1.0)
    feedback = jnp.where(jnp.isnan(state.feedback_load), step_load,
                         state.feedback_load + (step_load - state.feedback_load)
                         / config.feedback_steps)
    controller = state.controller
    if policy.pacing:
      measured = feedback if policy.shared_accounting else load
      errors = pacing.relative_error(measured, target, kind)
      if policy.shared_accounting and policy.split_common:
        # Only controllers currently pricing (binding) share the pool's error;
        # a slack one has nothing to give back.
        errors = pacing.shared_errors(errors, controlled & (controller.lam > 0))
      controller = pacing.controller_update(controller, errors, policy.gains, active=controlled)
    entries = where.astype(jnp.float32)
    mean_submitted = jnp.sum(submitted * entries) / jnp.maximum(entries.sum(), 1.0)
    mean_value = jnp.sum(value * entries) / jnp.maximum(entries.sum(), 1.0)
    scale = state.scale
    if policy.anchor:
      scale = pacing.anchor_update(scale, mean_submitted, mean_value, rate=0.5)
    new_state = StepState(controller, wins_window, slots_window, landscape_stats, direct_params,
                          scale, feedback)
    record = {"step_load": step_load, "window_load": load,
              "lam": controller.lam, "engagement": clicks.sum(),
              "value": (clicks * chosen_value).sum(), "requests": active.sum(), "slots": slots,
              "mean_score": state.scale * mean_submitted, "mean_value": mean_value,
              "scale": state.scale, "business_value": business_value, "spend": spend,
              "wins": wins}
    return new_state, record

  pool_index, active, queue_cut, _ = schedule
  state = init_state(num_businesses, config.window_steps)
  # A weak prior for the landscape before any observation: scores near 0.1.
  state = state._replace(landscape_stats=jnp.tile(
      jnp.array([[1.0, np.log(0.1), np.log(0.1) ** 2 + 1.0]], jnp.float32), (num_businesses, 1)))
  scan = jax.jit(lambda s, xs: jax.lax.scan(step, s, xs))
  _, records = scan(state, (jnp.asarray(pool_index), jnp.asarray(active), jnp.asarray(queue_cut)))
  return {k: np.asarray(v) for k, v in records.items()}
