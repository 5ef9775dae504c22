"""Score calibration so that scores of different business lines are comparable.

Each business line's ranker emits scores on its own scale (a logit, a square
root of a probability, an eCPM). Layer 2 first maps each to a common scale,
here the probability of the logged outcome, before multipliers and pacing act
on it (seed 001: "first solve can we even compare these").

Every method is a pair of pure functions over a pytree of arrays:

* ``fit_<method>(scores, labels, *, weights=None, where=None, ...) -> params``
* ``apply_<method>(params, scores) -> calibrated``

so fits are jit/vmap-safe, parameters go through ``jax.tree`` utilities and are
saved with orbax (:func:`save_params`, :func:`restore_params`). Methods:

* ``platt``: ``sigmoid(a * score + b)`` by Newton's method on the weighted
  log-likelihood (exact logistic regression on one feature);
* ``isotonic``: weighted non-decreasing least-squares fit by PAV, applied by
  linear interpolation between knots and clipped at the ends (the same
  interpolant as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``);
* ``quantile``: maps a score to its empirical CDF level (uniform on [0, 1]),
  optionally onward to a target distribution's quantiles;
* ``bucketed``: equal-frequency buckets with a smoothed mean label each;
* :func:`fit_conditional` / :func:`apply_conditional`: any of the above per
  user segment, falling back to the pooled fit for thin segments.

Bad input: :func:`fit` checks concrete inputs eagerly (:func:`check_fit_inputs`
raises on NaN/inf, labels outside [0, 1] or nothing to fit); inside jit, rows
with a non-finite score, label or weight are left out of every fit rather than
turning its parameters into NaN.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hgrank_jax.blend import pav


def _prepare(scores, labels, weights, where):
  scores = jnp.asarray(scores, jnp.result_type(float))
  labels = jnp.asarray(labels, scores.dtype)
  weights = jnp.ones_like(scores) if weights is None else jnp.asarray(weights, scores.dtype)
  if where is not None:
    weights = jnp.where(where, weights, 0.0)
  # Under jit nothing can raise: a row with a NaN/inf score, label or weight is
  # left out (weight 0, finite placeholders) instead of turning the fit into NaN.
  finite = jnp.isfinite(scores) & jnp.isfinite(labels) & jnp.isfinite(weights)
  weights = jnp.where(finite, weights, 0.0)
  scores, labels = jnp.where(finite, scores, 0.0), jnp.where(finite, labels, 0.0)
  return scores, labels, weights


def check_fit_inputs(scores, labels=None, *, weights=None, where=None, what="calibration fit"):
  """Eager checks of a fit's concrete inputs; tracers pass through unchecked.

  Raises:
    ValueError: a NaN/inf score, label or weight among the rows used, a label
      outside [0, 1], a negative weight, mismatched shapes, or no row with
      positive weight; the message gives the count and the first row index.
  """
  arrays = [scores, labels, weights, where]
  if any(isinstance(x, jax.core.Tracer) for x in arrays):
    return
  scores = np.asarray(scores, np.float64)
  used = np.ones(scores.shape, bool) if where is None else np.broadcast_to(
      np.asarray(where, bool), scores.shape)
  checks = [("score", scores)]
  if labels is not None:
    checks.append(("label", np.asarray(labels, np.float64)))
  if weights is not None:
    checks.append(("weight", np.asarray(weights, np.float64)))
  for name, values in checks:
    if values.shape != scores.shape:
      raise ValueError(f"{what}: {name}s have shape {values.shape}, scores {scores.shape}")
    bad = ~np.isfinite(values) & used
    if bad.any():
      raise ValueError(f"{what}: {int(bad.sum())} {name}(s) are NaN or inf among the rows used, "
                       f"first at row {int(np.argmax(bad))}; fix them or leave those rows out "
                       "with `where`")
  if labels is not None:
    label_values = np.asarray(labels, np.float64)
    bad = ((label_values < 0) | (label_values > 1)) & used
    if bad.any():
      row = int(np.argmax(bad))
      raise ValueError(f"{what}: {int(bad.sum())} label(s) outside [0, 1], first at row {row} "
                       f"({label_values[row]})")
  weight_values = np.ones(scores.shape) if weights is None else np.asarray(weights, np.float64)
  if np.any((weight_values < 0) & used):
    raise ValueError(f"{what}: negative weights")
  if not np.any((weight_values > 0) & used):
    raise ValueError(f"{what}: no row to fit (every row is masked out by `where` or has weight 0)")


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def fit_platt(scores, labels, *, weights=None, where=None, num_iterations=30, l2=0.0):
  """Fits ``P(label = 1 | score) = sigmoid(slope * score + intercept)``.

  Newton's method on the weighted binary log-likelihood, on a standardised
  score for conditioning, started from the base rate.

  Args:
    scores: float ``[n]`` raw scores.
    labels: float ``[n]`` in [0, 1].
    weights: optional float ``[n]`` sample weights.
    where: optional bool ``[n]`` of rows to use.
    num_iterations: Newton steps (a fixed count keeps it jit-friendly).
    l2: ridge penalty on the slope in standardised units (0 = plain MLE).

  Returns:
    ``{"slope": [], "intercept": []}`` float scalars.
  """
  scores, labels, weights = _prepare(scores, labels, weights, where)
  total = jnp.maximum(weights.sum(), 1e-12)
  mean = jnp.sum(weights * scores) / total
  std = jnp.sqrt(jnp.sum(weights * (scores - mean) ** 2) / total)
  std = jnp.where(std > 0, std, 1.0)
  features = jnp.stack([(scores - mean) / std, jnp.ones_like(scores)], axis=-1)
  base_rate = jnp.clip(jnp.sum(weights * labels) / total, 1e-6, 1 - 1e-6)
  theta = jnp.array([0.0, jnp.log(base_rate / (1 - base_rate))], scores.dtype)
  ridge = jnp.array([l2, 0.0], scores.dtype)

  def newton_step(theta, _):
    prob = jax.nn.sigmoid(features @ theta)
    gradient = features.T @ (weights * (prob - labels)) + ridge * theta
    curvature = weights * prob * (1 - prob)
    hessian = (features.T * curvature) @ features + jnp.diag(ridge) + 1e-9 * jnp.eye(2)
    return theta - jnp.linalg.solve(hessian, gradient), None

  theta, _ = jax.lax.scan(newton_step, theta, None, length=num_iterations)
  slope = theta[0] / std
  return {"slope": slope, "intercept": theta[1] - slope * mean}


@jax.jit
def apply_platt(params, scores):
  """Calibrated probabilities ``sigmoid(slope * scores + intercept)``, same shape."""
  return jax.nn.sigmoid(params["slope"] * jnp.asarray(scores) + params["intercept"])


@jax.jit
def fit_isotonic(scores, labels, *, weights=None, where=None):
  """Fits a non-decreasing map from score to mean label by weighted PAV.

  Tied scores are pooled into one point (weighted mean label) before PAV, so
  the fit is a function of the score, as in scikit-learn.

  Args:
    scores, labels, weights, where: as in :func:`fit_platt`, shape ``[n]``.

  Returns:
    ``{"knots_x": [n], "knots_y": [n], "num_knots": []}``: the distinct valid
    scores ascending and the fitted value at each; entries from ``num_knots``
    on repeat the last knot.
  """
  scores, labels, weights = _prepare(scores, labels, weights, where)
  knots_x, mean_labels, totals, num_knots = pav.pool_ties(scores, labels, weights)
  knots_y = pav.weighted_pav(mean_labels, totals, num_knots)
  return {"knots_x": knots_x, "knots_y": knots_y, "num_knots": num_knots}


@jax.jit
def apply_isotonic(params, scores):
  """Linear interpolation between the isotonic knots, constant beyond the ends."""
  scores = jnp.asarray(scores)
  flat = jnp.interp(scores.reshape(-1), params["knots_x"], params["knots_y"])
  return flat.reshape(scores.shape)


@functools.partial(jax.jit, static_argnames=("num_quantiles",))
def fit_quantile(scores, labels=None, *, weights=None, where=None, num_quantiles=1001,
                 target=None):
  """Fits quantile normalisation: score -> its empirical CDF level.

  Args:
    scores: float ``[n]``; labels are ignored (kept for a uniform signature).
    weights, where: optional as in :func:`fit_platt` (weights act as counts).
    num_quantiles: number of CDF levels stored.
    target: optional float ``[m]`` sample of a target distribution; when given
      the calibrated value is that distribution's quantile at the same level
      (quantile mapping), otherwise the level itself (uniform on [0, 1]).

  Returns:
    ``{"knots": [Q], "levels": [Q], "target": [Q]}``.
  """
  scores, _, weights = _prepare(scores, jnp.zeros_like(jnp.asarray(scores)), weights, where)
  order = jnp.argsort(jnp.where(weights > 0, scores, jnp.inf))
  sorted_scores, sorted_weights = scores[order], weights[order]
  # Weighted CDF evaluated at each sorted point's midpoint (Hazen positions),
  # then read off at evenly spaced levels.
  cumulative = jnp.cumsum(sorted_weights)
  total = jnp.maximum(cumulative[-1], 1e-12)
  positions = (cumulative - 0.5 * sorted_weights) / total
  levels = jnp.linspace(0.0, 1.0, num_quantiles, dtype=scores.dtype)
  valid = sorted_weights > 0
  knots = jnp.interp(levels, jnp.where(valid, positions, 2.0),
                     jnp.where(valid, sorted_scores, sorted_scores[jnp.sum(valid) - 1]))
  if target is None:
    target_values = levels
  else:
    target_values = jnp.quantile(jnp.asarray(target, scores.dtype), levels)
  return {"knots": knots, "levels": levels, "target": target_values}


@jax.jit
def apply_quantile(params, scores):
  """Maps scores to CDF levels in [0, 1] (or onward to the target quantiles)."""
  scores = jnp.asarray(scores)
  level = jnp.interp(scores.reshape(-1), params["knots"], params["levels"])
  value = jnp.interp(level, params["levels"], params["target"])
  return value.reshape(scores.shape)


@functools.partial(jax.jit, static_argnames=("num_buckets",))
def fit_bucketed(scores, labels, *, weights=None, where=None, num_buckets=20,
                 prior_strength=1.0):
  """Equal-frequency buckets of the score with a smoothed mean label per bucket.

  Args:
    scores, labels, weights, where: as in :func:`fit_platt`.
    num_buckets: number of buckets.
    prior_strength: pseudo-count pulling a thin bucket toward the overall rate.

  Returns:
    ``{"edges": [num_buckets - 1], "values": [num_buckets]}``.
  """
  scores, labels, weights = _prepare(scores, labels, weights, where)
  quantile_params = fit_quantile(scores, weights=weights, num_quantiles=num_buckets + 1)
  edges = quantile_params["knots"][1:-1]
  bucket = jnp.searchsorted(edges, scores, side="right")
  counts = jax.ops.segment_sum(weights, bucket, num_segments=num_buckets)
  positives = jax.ops.segment_sum(weights * labels, bucket, num_segments=num_buckets)
  overall = jnp.sum(weights * labels) / jnp.maximum(weights.sum(), 1e-12)
  values = (positives + prior_strength * overall) / (counts + prior_strength)
  return {"edges": edges, "values": values}


@jax.jit
def apply_bucketed(params, scores):
  """Looks up the bucket of each score; same shape as ``scores``."""
  scores = jnp.asarray(scores)
  return params["values"][jnp.searchsorted(params["edges"], scores, side="right")]


FIT = {"platt": fit_platt, "isotonic": fit_isotonic, "quantile": fit_quantile,
       "bucketed": fit_bucketed}
APPLY = {"platt": apply_platt, "isotonic": apply_isotonic, "quantile": apply_quantile,
         "bucketed": apply_bucketed}


def _check_method(method):
  if method not in FIT:
    raise ValueError(f"unknown calibration method {method!r}; expected one of {sorted(FIT)}")


def fit(method, scores, labels, **options):
  """Fits calibration ``method`` (a static string, see ``FIT``); returns params.

  With concrete inputs it first runs :func:`check_fit_inputs` and raises a
  ``ValueError`` on NaN/inf values, labels outside [0, 1] or no usable row;
  traced inputs are not checked and such rows are left out of the fit.
  """
  _check_method(method)
  check_fit_inputs(scores, labels if method != "quantile" else None,
                   weights=options.get("weights"), where=options.get("where"),
                   what=f"calibration.fit({method!r})")
  return FIT[method](scores, labels, **options)


def apply(method, params, scores):
  """Applies fitted calibration ``method`` to ``scores`` of any shape."""
  _check_method(method)
  return APPLY[method](params, scores)


def fit_conditional(method, scores, labels, segments, num_segments, *, weights=None, where=None,
                    min_weight=50.0, **options):
  """Fits ``method`` separately per segment (user group, scene), plus a pooled fit.

  Args:
    method: calibration method name.
    scores, labels: float ``[n]``.
    segments: int ``[n]`` in ``[0, num_segments)``.
    num_segments: static int.
    weights, where: optional as in :func:`fit_platt`.
    min_weight: segments with less total weight use the pooled fit instead.
    **options: passed to the method's fit.

  Returns:
    ``{"segment": params stacked on a leading [num_segments] axis,
    "pooled": params, "use_segment": bool [num_segments]}``.
  """
  _check_method(method)
  check_fit_inputs(scores, labels if method != "quantile" else None, weights=weights, where=where,
                   what=f"calibration.fit_conditional({method!r})")
  if not isinstance(segments, jax.core.Tracer):
    segment_values = np.asarray(segments)
    outside = (segment_values < 0) | (segment_values >= num_segments)
    if outside.any():
      row = int(np.argmax(outside))
      raise ValueError(f"calibration.fit_conditional: {int(outside.sum())} segment id(s) outside "
                       f"[0, {num_segments}), first at row {row} ({segment_values[row]}); they "
                       "would be dropped from every segment's fit")
  return _fit_conditional(method, scores, labels, segments, num_segments, weights=weights,
                          where=where, min_weight=min_weight, **options)


@functools.partial(jax.jit, static_argnames=("method", "num_segments", "num_iterations",
                                             "num_quantiles", "num_buckets"))
def _fit_conditional(method, scores, labels, segments, num_segments, *, weights=None, where=None,
                     min_weight=50.0, **options):
  _check_method(method)
  scores, labels, weights = _prepare(scores, labels, weights, where)
  segments = jnp.asarray(segments)
  fit_fn = functools.partial(FIT[method], **options)

  def fit_one(segment_id):
    return fit_fn(scores, labels, weights=jnp.where(segments == segment_id, weights, 0.0))

  per_segment = jax.vmap(fit_one)(jnp.arange(num_segments))
  segment_weight = jax.ops.segment_sum(weights, segments, num_segments=num_segments)
  return {"segment": per_segment, "pooled": fit_fn(scores, labels, weights=weights),
          "use_segment": segment_weight >= min_weight}


@functools.partial(jax.jit, static_argnames=("method",))
def apply_conditional(method, params, scores, segments):
  """Calibrates each score with its segment's map (or the pooled one).

  Args:
    method: the method name used to fit ``params``.
    params: output of :func:`fit_conditional`.
    scores: float ``[...]``.
    segments: int, same shape as ``scores``.

  Returns:
    Float array of the shape of ``scores``.
  """
  _check_method(method)
  scores = jnp.asarray(scores)
  segments = jnp.asarray(segments)
  # Every segment's map on every score, then a gather: the number of segments
  # is small, and this avoids copying per-row parameters.
  all_maps = jax.vmap(lambda p: APPLY[method](p, scores))(params["segment"])
  own = jnp.take_along_axis(all_maps, segments[None].astype(jnp.int32), axis=0)[0]
  pooled = APPLY[method](params["pooled"], scores)
  return jnp.where(params["use_segment"][segments], own, pooled)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def reliability_curve(probs, labels, *, num_bins=15, where=None):
  """Per equal-width probability bin: mean prediction, mean label and count.

  Bins follow :func:`hgrank_jax.metrics.expected_calibration_error` (a
  probability on an inner edge belongs to the lower bin), so the count-weighted
  gap of these curves is that ECE.

  Returns:
    ``(mean_prob [num_bins], mean_label [num_bins], count [num_bins])``; empty
    bins hold NaN means and count 0.
  """
  probs = jnp.asarray(probs, jnp.result_type(float)).reshape(-1)
  labels = jnp.asarray(labels, probs.dtype).reshape(-1)
  weights = jnp.ones_like(probs) if where is None else jnp.asarray(where, probs.dtype).reshape(-1)
  edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=probs.dtype)
  bins = jnp.searchsorted(edges[1:-1], probs, side="left")
  count = jax.ops.segment_sum(weights, bins, num_segments=num_bins)
  prob_sum = jax.ops.segment_sum(weights * probs, bins, num_segments=num_bins)
  label_sum = jax.ops.segment_sum(weights * labels, bins, num_segments=num_bins)
  safe = jnp.where(count > 0, count, jnp.nan)
  return prob_sum / safe, label_sum / safe, count


def save_params(path, params):
  """Saves a calibration (or any) parameter pytree to directory ``path`` with orbax.

  ``path`` must not exist yet; it is written atomically.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(_absolute(path), params)
  checkpointer.wait_until_finished()


def restore_params(path, like=None):
  """Restores a pytree saved by :func:`save_params`; ``like`` gives its structure."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  if like is None:
    return checkpointer.restore(_absolute(path))
  return checkpointer.restore(_absolute(path), jax.tree.map(jnp.asarray, like))


def _absolute(path):
  import os  # pylint: disable=g-import-not-at-top
  return os.path.abspath(os.fspath(path))
