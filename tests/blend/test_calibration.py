"""Calibration fits against independent references (scikit-learn, closed forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hgrank_jax import metrics
from hgrank_jax.blend import calibration as cal
from hgrank_jax.blend import pav

sklearn_isotonic = pytest.importorskip("sklearn.isotonic")
sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _data(seed, n=1500, rounding=2):
  rng = np.random.default_rng(seed)
  scores = np.round(rng.normal(size=n), rounding)  # rounding creates ties
  labels = (rng.random(n) < 1 / (1 + np.exp(-1.7 * scores + 0.3))).astype(np.float64)
  weights = rng.uniform(0.2, 3.0, n)
  return scores, labels, weights


@pytest.mark.parametrize("seed", [0, 1])
def test_isotonic_matches_sklearn(seed):
  scores, labels, weights = _data(seed)
  queries = np.random.default_rng(seed + 10).normal(scale=1.5, size=400)
  reference = sklearn_isotonic.IsotonicRegression(out_of_bounds="clip").fit(
      scores, labels, sample_weight=weights)
  with jax.enable_x64(True):
    params = jax.jit(cal.fit_isotonic)(scores, labels, weights=weights)
    np.testing.assert_allclose(cal.apply_isotonic(params, scores), reference.predict(scores),
                               atol=1e-6)
    np.testing.assert_allclose(cal.apply_isotonic(params, queries), reference.predict(queries),
                               atol=1e-6)


def test_isotonic_float32_and_mask():
  scores, labels, weights = _data(3, n=600)
  keep = np.random.default_rng(4).random(600) < 0.7
  reference = sklearn_isotonic.IsotonicRegression(out_of_bounds="clip").fit(
      scores[keep], labels[keep], sample_weight=weights[keep])
  params = cal.fit_isotonic(scores, labels, weights=weights, where=keep)
  np.testing.assert_allclose(cal.apply_isotonic(params, scores), reference.predict(scores),
                             atol=1e-5)
  assert int(params["num_knots"]) == len(np.unique(scores[keep]))


def test_pav_is_monotone_and_weighted_mean_preserving():
  rng = np.random.default_rng(5)
  values, weights = rng.normal(size=50), rng.uniform(0.1, 2, 50)
  with jax.enable_x64(True):
    fitted = np.asarray(pav.weighted_pav(values, weights, 40))
  assert np.all(np.diff(fitted[:40]) >= -1e-12)
  assert np.allclose(fitted[40:], fitted[39])
  np.testing.assert_allclose(np.sum(weights[:40] * fitted[:40]), np.sum(weights[:40] * values[:40]))
  reference = sklearn_isotonic.IsotonicRegression().fit_transform(
      np.arange(40), values[:40], sample_weight=weights[:40])
  np.testing.assert_allclose(fitted[:40], reference, atol=1e-10)


def test_platt_matches_logistic_regression():
  scores, labels, weights = _data(6, rounding=6)
  scores = 3.0 * scores + 5.0  # an uncentred scale exercises the standardisation
  reference = sklearn_linear.LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(
      scores[:, None], labels, sample_weight=weights)
  with jax.enable_x64(True):
    params = jax.jit(cal.fit_platt)(scores, labels, weights=weights)
    np.testing.assert_allclose(params["slope"], reference.coef_[0, 0], rtol=1e-6)
    np.testing.assert_allclose(params["intercept"], reference.intercept_[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cal.apply_platt(params, scores),
                               reference.predict_proba(scores[:, None])[:, 1], atol=1e-8)


def test_quantile_normalisation_maps_to_uniform():
  rng = np.random.default_rng(7)
  params = cal.fit_quantile(rng.lognormal(size=20_000))
  fresh = np.asarray(cal.apply_quantile(params, rng.lognormal(size=20_000)))
  assert fresh.min() >= 0 and fresh.max() <= 1
  assert stats.kstest(fresh, "uniform").statistic < 0.02


def test_quantile_mapping_onto_target():
  rng = np.random.default_rng(8)
  target = rng.normal(3.0, 0.5, size=20_000)
  params = cal.fit_quantile(rng.exponential(size=20_000), target=target)
  mapped = np.asarray(cal.apply_quantile(params, rng.exponential(size=20_000)))
  assert stats.ks_2samp(mapped, target).statistic < 0.03


def test_bucketed_matches_bucket_means():
  scores, labels, _ = _data(9, n=4000, rounding=8)
  params = cal.fit_bucketed(scores, labels, num_buckets=10, prior_strength=0.0)
  edges = np.quantile(scores, np.linspace(0, 1, 11))[1:-1]
  buckets = np.searchsorted(edges, scores, side="right")
  expected = np.array([labels[buckets == b].mean() for b in range(10)])
  np.testing.assert_allclose(params["values"], expected, atol=0.02)


def test_conditional_equals_separate_fits_and_falls_back():
  scores, labels, _ = _data(10, n=3000, rounding=6)
  segments = np.random.default_rng(11).integers(0, 3, 3000)
  segments[:10] = 3  # a thin segment that must use the pooled map
  with jax.enable_x64(True):
    params = cal.fit_conditional("platt", scores, labels, segments, 4, min_weight=50.0)
    out = np.asarray(cal.apply_conditional("platt", params, scores, segments))
    for s in range(3):
      alone = cal.fit_platt(scores[segments == s], labels[segments == s])
      np.testing.assert_allclose(out[segments == s],
                                 cal.apply_platt(alone, scores[segments == s]), atol=1e-9)
    pooled = cal.fit_platt(scores, labels)
    np.testing.assert_allclose(out[:10], cal.apply_platt(pooled, scores[:10]), atol=1e-9)


def test_calibration_reduces_ece_on_held_out():
  rng = np.random.default_rng(12)
  raw = rng.normal(size=16_000)
  labels = (rng.random(16_000) < 1 / (1 + np.exp(-(0.8 * raw - 2.0)))).astype(np.float32)
  raw_prob = 1 / (1 + np.exp(-2.5 * raw))  # a miscalibrated squashing
  train, test = slice(0, 8_000), slice(8_000, None)
  before = float(metrics.expected_calibration_error(raw_prob[test], labels[test]))
  for method in ("platt", "isotonic", "bucketed"):
    params = cal.fit(method, raw_prob[train], labels[train])
    after = float(metrics.expected_calibration_error(cal.apply(method, params, raw_prob[test]),
                                                 labels[test]))
    assert after < 0.2 * before, (method, before, after)


def test_ece_closed_form():
  probs = np.array([0.1, 0.1, 0.9, 0.9])
  labels = np.array([0, 1, 1, 1])
  # bin of 0.1: |0.1 - 0.5| = 0.4; bin of 0.9: |0.9 - 1| = 0.1; equal counts.
  np.testing.assert_allclose(metrics.expected_calibration_error(probs, labels, num_bins=10), 0.25,
                             rtol=1e-6)
  assert np.isnan(metrics.expected_calibration_error(probs, labels, where=np.zeros(4, bool)))


def test_reliability_curve_reproduces_ece():
  rng = np.random.default_rng(14)
  probs = np.concatenate([rng.random(500), np.linspace(0, 1, 16)])  # edges included
  labels = (rng.random(516) < probs).astype(np.float32)
  mean_prob, mean_label, count = map(np.asarray, cal.reliability_curve(probs, labels))
  keep = count > 0
  by_curve = np.sum(count[keep] * np.abs(mean_prob[keep] - mean_label[keep])) / count.sum()
  np.testing.assert_allclose(metrics.expected_calibration_error(probs, labels), by_curve, rtol=1e-5)


def test_save_restore_roundtrip(tmp_path):
  scores, labels, _ = _data(13, n=300)
  params = {"platt": cal.fit_platt(scores, labels), "iso": cal.fit_isotonic(scores, labels)}
  cal.save_params(tmp_path / "calib", params)
  restored = cal.restore_params(tmp_path / "calib", like=params)
  jax.tree.map(np.testing.assert_array_equal, params, restored)


def test_unknown_method_raises():
  with pytest.raises(ValueError, match="unknown calibration method"):
    cal.fit("spline", jnp.zeros(3), jnp.zeros(3))
