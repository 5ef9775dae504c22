"""The Layer 2 experiment: fit calibration and multipliers, run each blending variant.

:func:`run_experiment` takes an ``ml_collections`` config (``configs/blend.py``)
and returns plain numpy/float results; ``report.py`` writes them to disk. The
variants form the ladder of issue 10: raw scores, calibrated, + multipliers,
+ pacing without shading, + shading with pacing, + governance (and the
governance switches one at a time). Besides the simulator it measures two
closed-form checks: the PI controller's lambda against lambda* from bisection,
and shaded against uniformly scaled bidding at equal cost.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax import metrics
from hgrank_jax.blend import calibration, mixer, pacing, shading
from hgrank_jax.blend import simulate as sim


def traffic_config(config) -> sim.TrafficConfig:
  """The :class:`TrafficConfig` described by ``config.traffic``."""
  fields = dict(config.traffic)
  for name in ("caps", "floors", "monetized"):
    fields[name] = tuple(fields[name])
  fields["shocks"] = tuple(tuple(s) for s in fields["shocks"])
  return sim.TrafficConfig(**fields)


def _pad_knots(params, size):
  """Pads isotonic knots to ``size`` so per-business params stack."""
  if "knots_x" not in params:
    return params
  extra = size - params["knots_x"].shape[0]
  return dict(params, knots_x=jnp.pad(params["knots_x"], (0, extra), mode="edge"),
              knots_y=jnp.pad(params["knots_y"], (0, extra), mode="edge"))


def fit_layer2(config, pool, lines, num_segments, traffic):
  """Fits per-business calibration and the multipliers on logged impressions.

  Half of the logged impressions fit, the other half measures ECE.

  Returns:
    dict with stacked calibration params, alpha ``[S, B]``, per-business ECE
    before/after and reliability curves.
  """
  logs = sim.logged_impressions(pool, traffic)
  method = config.calibration_method
  num_businesses = len(lines)
  train = np.arange(len(logs["raw"])) % 2 == 0
  per_business, ece, curves = [], {}, {}
  calibrated = np.zeros(len(logs["raw"]), np.float32)
  for b, line in enumerate(lines):
    # A mask instead of a slice keeps one shape for every business: one compile.
    fit_rows = train & (logs["business"] == b)
    params = calibration.fit(method, logs["raw"][train], logs["click"][train],
                             where=fit_rows[train])
    per_business.append(params)
    rows = logs["business"] == b
    mapped = np.asarray(calibration.apply(method, params, logs["raw"]))
    calibrated[rows] = mapped[rows]
    # Full-length arrays with a mask (not slices): one compiled shape for all.
    held_out = ~train & rows
    raw, clicks = logs["raw"], logs["click"]
    ece[line] = (float(metrics.expected_calibration_error(raw, clicks, where=held_out)),
                 float(metrics.expected_calibration_error(mapped, clicks, where=held_out)))
    curves[line] = (calibration.reliability_curve(raw, clicks, where=held_out),
                    calibration.reliability_curve(mapped, clicks, where=held_out))
  segment_ece = _segment_ece(method, logs, train, calibrated, lines, num_segments)
  size = max((p["knots_x"].shape[0] for p in per_business if "knots_x" in p), default=0)
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *[_pad_knots(p, size) for p in per_business])
  if config.multiplier_model == "net":
    features = np.eye(num_segments, dtype=np.float32)[logs["segment"][train]]
    model, net_params = mixer.fit_multiplier_net(
        features, calibrated[train], logs["click"][train], logs["business"][train],
        num_businesses, hidden=(16,))
    alpha = np.asarray(model.apply(net_params, np.eye(num_segments, dtype=np.float32)))
  else:
    alpha = np.asarray(mixer.fit_segment_multipliers(
        calibrated[train], logs["click"][train], logs["segment"][train], logs["business"][train],
        num_segments, num_businesses, prior_strength=config.multiplier_prior))
  return {"calibration_params": stacked, "alpha": alpha, "ece": ece, "curves": curves,
          "segment_ece": segment_ece}


def _segment_ece(method, logs, train, pooled, lines, num_segments):
  """Held-out ECE within user segments: pooled vs per-segment (conditional) fits.

  Returns:
    dict line -> (mean segment ECE of the pooled map, of the conditional map).
  """
  out = {}
  for b, line in enumerate(lines):
    rows = logs["business"] == b
    params = calibration.fit_conditional(method, logs["raw"][train], logs["click"][train],
                                         logs["segment"][train], num_segments,
                                         where=rows[train], min_weight=200.0)
    held_out = ~train & rows
    conditional = np.asarray(calibration.apply_conditional(method, params, logs["raw"],
                                                           logs["segment"]))
    pairs = []
    for segment in range(num_segments):
      mask = held_out & (logs["segment"] == segment)
      if mask.sum() == 0:
        continue
      pairs.append(tuple(float(metrics.expected_calibration_error(p, logs["click"], where=mask))
                         for p in (pooled, conditional)))
    out[line] = tuple(float(x) for x in np.mean(pairs, axis=0))
  return out


def _gains(spec):
  return pacing.ControllerGains(kp=spec.kp, ki=spec.ki, kd=spec.kd, smoothing=spec.smoothing,
                                max_step=spec.max_step, max_lambda=spec.max_lambda)


def variants(config, fitted, num_segments, num_businesses):
  """The ladder of blending variants as ``[(name, Policy)]``."""
  base = dict(calibrate=True, calibration_method=config.calibration_method,
              calibration_params=fitted["calibration_params"],
              alpha=np.ones((num_segments, num_businesses), np.float32), pacing=False,
              shading=False, win_model=config.win_model, anchor=False, shared_accounting=False,
              gains=_gains(config.gains))
  multipliers = dict(base, alpha=fitted["alpha"])
  paced = dict(multipliers, pacing=True)
  shaded = dict(paced, shading=True)
  damped = dict(shaded, gains=_gains(config.governed_gains))
  ladder = [
      ("raw scores", dict(base, calibrate=False)),
      ("calibrated", base),
      ("+ multipliers", multipliers),
      ("+ pacing (unshaded)", paced),
      ("+ shading with pacing", shaded),
      ("+ governance", dict(damped, anchor=True, shared_accounting=True)),
      ("  governance: anchor only", dict(shaded, anchor=True)),
      ("  governance: damping + shared accounting only", dict(damped, shared_accounting=True)),
      ("  + governance, direct win-rate route", dict(damped, anchor=True, shared_accounting=True,
                                                    win_model="direct"
                                                    if config.win_model == "landscape"
                                                    else "landscape")),
  ]
  return [(name, sim.Policy(**spec)) for name, spec in ladder]


def summarise(records, traffic, lines, *, raw=False):
  """Table metrics of one run, measured after warm-up.

  Load error is the mean absolute relative error of each controlled business's
  windowed load against its target; exceedance is the largest relative excess
  over a cap (for a floor, both count only the shortfall below it). Both are
  also given away from supply shocks ("no shock"). Oscillation amplitude is sqrt(2)
  times the standard deviation of the windowed load around its moving average
  over three windows, relative to the target (a sinusoid's amplitude), averaged
  over the controllers that price at least half of the time (and, as a second
  column, over every controlled business, slack ones included). Score
  drift is the mean score over the mean calibrated value minus 1 (0 when
  scores sit on the value baseline), with its change from the first to the
  last post-warm-up day as the trend.
  """
  kind, target = sim.targets_of(traffic, len(lines))
  start = int(round(traffic.warmup_days * traffic.steps_per_day))
  load = records["window_load"][start:]
  requests = records["requests"].sum()
  row = {"platform value / request": float(records["value"].sum() / requests),
         "engagement / request": float(records["engagement"].sum() / requests)}
  span = 3 * traffic.window_steps
  kernel = np.ones(span) / span
  # Steps away from supply shocks: from a shock's start to two windows after
  # its end the supply, not the controller, sets the load.
  calm = np.ones(traffic.num_steps, bool)
  for _, shock_start, duration, _ in traffic.shocks:
    first = int(shock_start * traffic.steps_per_day)
    last = int((shock_start + duration) * traffic.steps_per_day) + 2 * traffic.window_steps
    calm[first:last] = False
  calm = calm[start:]
  amplitudes, acting = [], []
  for b in np.flatnonzero(kind != 0):
    relative = kind[b] * (load[:, b] - target[b]) / target[b]
    if kind[b] < 0:  # a floor is only missed from below: count the shortfall
      relative = np.maximum(relative, 0.0)
    row[f"{lines[b]} load error"] = float(np.mean(np.abs(relative)))
    row[f"{lines[b]} max excess"] = float(np.max(relative))
    row[f"{lines[b]} load error (no shock)"] = float(np.mean(np.abs(relative[calm])))
    row[f"{lines[b]} max excess (no shock)"] = float(np.max(relative[calm]))
    smooth = np.convolve(load[:, b], kernel, mode="same")
    inner = slice(span, len(smooth) - span)
    amplitudes.append(np.sqrt(2) * np.std((load[:, b] - smooth)[inner]) / target[b])
    # A controller that priced at least half of the time is acting; one whose
    # target stays slack only feels the others' oscillation.
    acting.append(np.mean(records["lam"][start:, b] > 0) >= 0.5)
    row[f"{lines[b]} mean load"] = float(load[:, b].mean())
  amplitudes, acting = np.asarray(amplitudes), np.asarray(acting)
  row["oscillation amplitude"] = float(np.mean(amplitudes[acting])) if acting.any() else float(
      "nan")
  row["oscillation amplitude (all controlled)"] = float(np.mean(amplitudes))
  ratio = records["mean_score"][start:] / records["mean_value"][start:]
  day = traffic.steps_per_day
  row["score drift"] = float("nan") if raw else float(np.mean(ratio) - 1)
  row["score drift trend"] = float("nan") if raw else float(
      np.mean(ratio[-day:]) / np.mean(ratio[:day]) - 1)
  won = records["wins"][start:].sum(0)
  for b in np.flatnonzero(kind == 1):
    row[f"{lines[b]} value / won slot"] = float(records["business_value"][start:, b].sum()
                                                / max(won[b], 1))
    # Spend in submitted units (the anchor's common factor taken out).
    spend = np.sum(records["spend"][start:, b] / records["scale"][start:])
    row[f"{lines[b]} value / spend"] = float(records["business_value"][start:, b].sum()
                                             / max(spend, 1e-12))
  return row


def lambda_convergence_check(seed=0, num_steps=400, batch=256):
  """PI controller vs bisection lambda* for a closed-form log-normal F.

  Returns:
    dict: lambda_star, lambda_controller (mean of the last 150 steps),
    relative_gap, the lambda trajectory, and shaded vs uniformly scaled value
    at the same cost.
  """
  landscape = {"mu": jnp.float32(-0.4), "sigma": jnp.float32(0.6)}
  win = shading.lognormal_win_rate
  values = jnp.asarray(np.random.default_rng(seed).lognormal(0.0, 0.5, 20_000), jnp.float32)
  cap = 0.6 * float(shading.expected_outcome(0.0, values, win, landscape)[0])
  lam_star = shading.optimal_lambda(values, cap, win, landscape)
  gains = pacing.ControllerGains(kp=0.3, ki=0.15)

  def step(carry, key):
    state, window = carry
    draw = jax.random.choice(key, values, (batch,))
    scores = shading.shade(draw, state.lam[0], win, landscape)
    wins = (jax.random.uniform(jax.random.fold_in(key, 1), (batch,))
            < win(scores, landscape)).astype(jnp.float32)
    window = 0.9 * window + 0.1 * jnp.mean(scores * wins)
    errors = pacing.relative_error(window[None], jnp.array([cap]), jnp.array([1]))
    return (pacing.controller_update(state, errors, gains), window), state.lam[0]

  keys = jax.random.split(jax.random.PRNGKey(seed), num_steps)
  _, trajectory = jax.lax.scan(step, (pacing.init_controller(1), jnp.float32(cap)), keys)
  settled = float(jnp.mean(trajectory[-150:]))
  _, shaded_value, _ = shading.expected_outcome(lam_star, values, win, landscape)
  low, high = 0.0, 1.0
  for _ in range(60):  # uniform factor on every unshaded score meeting the same cap
    kappa = 0.5 * (low + high)
    cost = float(jnp.mean(kappa * values * win(kappa * values, landscape)))
    low, high = (kappa, high) if cost < cap else (low, kappa)
  scaled_value = float(jnp.mean(values * win(kappa * values, landscape)))
  return {"lambda_star": lam_star, "lambda_controller": settled,
          "relative_gap": abs(settled - lam_star) / lam_star,
          "trajectory": np.asarray(trajectory), "cap": cap,
          "shaded_value": float(shaded_value), "scaled_value": scaled_value}


def spend_cap_check(config, traffic, pool, lines, schedule, fitted, num_segments):
  """The seed's cost constraint in the simulator: shaded vs uniform at a spend cap.

  Only the ad line is constrained, on the score it spends per filled slot,
  capped at ``config.spend_cap_fraction`` of what it spends unconstrained (the
  "+ multipliers" policy). The same controller (governed gains, shared ledger)
  paces it once with a uniform throttle and once with shading.

  Returns:
    dict with the cap and, per policy, the ad's spend per slot, its relative
    error against the cap (MARE of the window after warm-up), its value per
    request and the platform's value per request.
  """
  ad = lines.index("ad")
  start = int(round(traffic.warmup_days * traffic.steps_per_day))
  ladder = dict(variants(config, fitted, num_segments, len(lines)))
  free = sim.run_stream(ladder["+ multipliers"], traffic, pool, lines, schedule)
  cap = config.spend_cap_fraction * float(free["spend"][start:, ad].sum()
                                          / free["slots"][start:].sum())
  caps = tuple(cap if b == ad else float("nan") for b in range(len(lines)))
  spend_traffic = dataclasses.replace(traffic, cap_measure="spend", caps=caps,
                                      floors=(0.0,) * len(lines))
  out = {"cap": cap, "unconstrained spend / slot": cap / config.spend_cap_fraction}
  for name, key in (("uniform throttle", "+ pacing (unshaded)"),
                    ("shading", "+ shading with pacing")):
    policy = ladder[key]._replace(gains=_gains(config.governed_gains), shared_accounting=True)
    records = sim.run_stream(policy, spend_traffic, pool, lines, schedule)
    window = records["window_load"][start:, ad]
    requests = records["requests"][start:].sum()
    out[name] = {
        "ad spend / slot": float(records["spend"][start:, ad].sum()
                                 / records["slots"][start:].sum()),
        "ad spend error": float(np.mean(np.abs(window - cap)) / cap),
        "ad value / request": float(records["business_value"][start:, ad].sum() / requests),
        "platform value / request": float(records["value"][start:].sum() / requests)}
  return out


def run_experiment(config, log=print):
  """Runs every variant; returns tables, per-step records and checks."""
  traffic = traffic_config(config)
  started = time.time()
  pool, lines, num_segments, effect = sim.build_pool(traffic)
  schedule = sim.request_schedule(traffic, lines)
  fitted = fit_layer2(config, pool, lines, num_segments, traffic)
  log(f"fitted calibration ({config.calibration_method}) and multipliers "
      f"in {time.time() - started:.1f}s")
  rows, runs = {}, {}
  wanted = tuple(config.get("variants", ()))
  ladder = variants(config, fitted, num_segments, len(lines))
  unknown = set(wanted) - {name for name, _ in ladder}
  if unknown:
    raise ValueError(f"unknown variants {sorted(unknown)}; choose from {[n for n, _ in ladder]}")
  for name, policy in ladder:
    if wanted and name not in wanted:
      continue
    t0 = time.time()
    runs[name] = sim.run_stream(policy, traffic, pool, lines, schedule)
    rows[name] = summarise(runs[name], traffic, lines, raw=not policy.calibrate)
    log(f"{name}: {time.time() - t0:.1f}s {rows[name]}")
  spend_check = None
  if config.get("spend_check", False):
    spend_check = spend_cap_check(config, traffic, pool, lines, schedule, fitted, num_segments)
    log(f"spend-cap check: {spend_check}")
  checks = lambda_convergence_check(seed=config.seed)
  log(f"lambda check: {checks['lambda_controller']:.4f} vs lambda* {checks['lambda_star']:.4f}")
  return {"traffic": traffic, "lines": lines, "rows": rows, "runs": runs, "fitted": fitted,
          "checks": checks, "volume": schedule[3], "segment_effect": effect,
          "spend_check": spend_check}
