"""CTR metrics against scikit-learn: ties, single-class groups, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from hgrank_jax import metrics

N = 400


def _data(seed, n=N, num_groups=30):
  rng = np.random.default_rng(seed)
  # Rounded scores create many ties; groups include single-class ones.
  logits = np.round(rng.normal(size=n), 1).astype(np.float32)
  labels = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.int32)
  groups = rng.integers(0, num_groups, size=n) * 7919 - 50_000  # sparse ids
  valid = rng.random(n) > 0.2
  labels[groups == groups[0]] = 1  # a group with positives only
  return logits, labels, groups, valid


def _sk_gauc(scores, labels, groups):
  total, weight = 0.0, 0
  for g in np.unique(groups):
    rows = groups == g
    if 0 < labels[rows].sum() < rows.sum():
      total += rows.sum() * roc_auc_score(labels[rows], scores[rows])
      weight += rows.sum()
  return total / weight if weight else np.nan


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_gauc_logloss_match_sklearn_with_ties_and_masks(seed):
  logits, labels, groups, valid = _data(seed)
  s, y, g = logits[valid], labels[valid], groups[valid]
  assert len(np.unique(s)) < len(s) // 2  # ties really are present
  np.testing.assert_allclose(metrics.auc(logits, labels, where=valid),
                             roc_auc_score(y, s), atol=1e-6)
  np.testing.assert_allclose(metrics.gauc(logits, labels, groups, where=valid),
                             _sk_gauc(s, y, g), atol=1e-6)
  p = 1 / (1 + np.exp(-s.astype(np.float64)))
  np.testing.assert_allclose(metrics.logloss(logits, labels, where=valid),
                             sk_log_loss(y, p), atol=1e-6)
  np.testing.assert_allclose(metrics.auc(logits, labels),
                             roc_auc_score(labels, logits), atol=1e-6)


def test_all_tied_scores_give_one_half():
  labels = np.array([0, 1, 1, 0, 1])
  assert float(metrics.auc(np.zeros(5), labels)) == 0.5
  assert roc_auc_score(labels, np.zeros(5)) == 0.5


def test_undefined_metrics_are_nan_not_zero():
  scores = jnp.array([0.3, 0.1, 0.7])
  assert np.isnan(metrics.auc(scores, jnp.array([1, 1, 1])))
  assert np.isnan(metrics.auc(scores, jnp.array([0, 1, 1]),
                              where=jnp.array([False, True, True])))
  # Every group single-class: GAUC undefined.
  assert np.isnan(metrics.gauc(scores, jnp.array([1, 0, 1]),
                               jnp.array([4, 5, 4])))
  assert np.isnan(metrics.logloss(scores, jnp.array([1, 0, 1]),
                                  where=jnp.zeros(3, bool)))
  assert np.isnan(metrics.expected_calibration_error(
      scores, jnp.array([1, 0, 1]), where=jnp.zeros(3, bool)))
  empty = jnp.zeros(0)
  for value in (metrics.auc(empty, empty),
                metrics.gauc(empty, empty, jnp.zeros(0, int)),
                metrics.logloss(empty, empty),
                metrics.expected_calibration_error(empty, empty)):
    assert np.isnan(value)


def _np_ece_and_bins(probs, labels, num_bins):
  """Brute force: bin k holds (k/B, (k+1)/B], bin 0 also holds 0."""
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.array([max(0, int(np.sum(edges[1:-1] < p))) for p in probs])
  ece = 0.0
  per_bin = []
  for k in range(num_bins):
    rows = bins == k
    if rows.any():
      ece += abs(probs[rows].sum() - labels[rows].sum())
      per_bin.append((labels[rows].mean(), probs[rows].mean()))
  return ece / len(probs), np.array(per_bin)


@pytest.mark.parametrize("num_bins", [15, 4])
def test_expected_calibration_error_matches_sklearn_bins(num_bins):
  rng = np.random.default_rng(2)
  probs = rng.random(N)
  # Probabilities exactly on inner edges check the edge convention (exact in
  # binary for 4 bins).
  probs[:6] = [0.0, 0.25, 0.5, 0.75, 1.0, 0.5]
  labels = (rng.random(N) < probs ** 1.3).astype(np.float64)
  valid = rng.random(N) > 0.1
  want, per_bin = _np_ece_and_bins(probs[valid], labels[valid], num_bins)
  prob_true, prob_pred = calibration_curve(labels[valid], probs[valid],
                                           n_bins=num_bins)
  np.testing.assert_allclose(per_bin[:, 0], prob_true, atol=1e-12)
  np.testing.assert_allclose(per_bin[:, 1], prob_pred, atol=1e-12)
  got = metrics.expected_calibration_error(probs.astype(np.float32), labels,
                                           num_bins=num_bins, where=valid)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_jit_and_vmap_agree():
  batches = [_data(seed, n=64, num_groups=5) for seed in (3, 4, 5)]
  logits, labels, groups, valid = (np.stack(x) for x in zip(*batches))
  vmapped = jax.vmap(lambda s, y, g, w: metrics.gauc(s, y, g, where=w))(
      logits, labels, groups, valid)
  vmapped_auc = jax.vmap(lambda s, y, w: metrics.auc(s, y, where=w))(
      logits, labels, valid)
  for row in range(3):
    w = valid[row]
    np.testing.assert_allclose(
        vmapped[row], _sk_gauc(logits[row][w], labels[row][w], groups[row][w]),
        atol=1e-6)
    np.testing.assert_allclose(
        vmapped_auc[row], roc_auc_score(labels[row][w], logits[row][w]),
        atol=1e-6)


def test_ctr_metrics_matches_sklearn_and_jax_versions():
  logits, labels, groups, valid = _data(6, n=3000, num_groups=200)
  out = metrics.ctr_metrics(logits, labels, groups, where=valid)
  s, y, g = logits[valid], labels[valid], groups[valid]
  np.testing.assert_allclose(out["auc"], roc_auc_score(y, s), atol=1e-12)
  np.testing.assert_allclose(out["gauc"], _sk_gauc(s, y, g), atol=1e-12)
  np.testing.assert_allclose(
      out["logloss"], sk_log_loss(y, 1 / (1 + np.exp(-s.astype(np.float64)))),
      atol=1e-12)
  np.testing.assert_allclose(
      out["ece"],
      _np_ece_and_bins(1 / (1 + np.exp(-s.astype(np.float64))), y, 15)[0],
      atol=1e-12)
  assert out["num_rows"] == valid.sum()
  assert out["num_gauc_groups"] == sum(
      0 < y[g == k].sum() < (g == k).sum() for k in np.unique(g))
  no_groups = metrics.ctr_metrics(logits, labels)
  assert np.isnan(no_groups["gauc"]) and no_groups["num_gauc_groups"] == 0


@pytest.mark.parametrize("seed", [7, 8])
def test_device_ctr_metrics_match_sklearn_with_ties_and_single_class_groups(seed):
  from hgrank_jax.metrics.classification import device_ctr_metrics  # pylint: disable=g-import-not-at-top
  logits, labels, groups, valid = _data(seed, n=20_000, num_groups=800)
  out = jax.device_get(device_ctr_metrics(logits, labels, groups, where=valid))
  s, y, g = logits[valid], labels[valid], groups[valid]
  assert len(np.unique(s)) < len(s) // 100  # heavy ties
  single_class = [k for k in np.unique(g) if y[g == k].min() == y[g == k].max()]
  assert single_class  # groups GAUC must skip
  p = 1 / (1 + np.exp(-s.astype(np.float64)))
  np.testing.assert_allclose(out["auc"], roc_auc_score(y, s), atol=1e-6)
  np.testing.assert_allclose(out["gauc"], _sk_gauc(s, y, g), atol=1e-6)
  np.testing.assert_allclose(out["logloss"], sk_log_loss(y, p), atol=1e-6)
  np.testing.assert_allclose(out["ece"], _np_ece_and_bins(p, y, 15)[0], atol=1e-6)
  assert out["num_rows"] == valid.sum() and bool(out["all_finite"])
  assert out["num_gauc_groups"] == len(np.unique(g)) - len(single_class)
  no_groups = jax.device_get(device_ctr_metrics(logits, labels, where=valid))
  assert np.isnan(no_groups["gauc"]) and no_groups["num_gauc_groups"] == 0
  bad = np.where(np.arange(len(logits)) == np.argmax(valid), np.nan, logits)
  assert not bool(device_ctr_metrics(bad, labels, groups, where=valid)["all_finite"])
  assert bool(device_ctr_metrics(bad, labels, groups, where=valid & ~np.isnan(bad))["all_finite"])


def test_bad_input_is_named():
  s = jnp.zeros(4)
  with pytest.raises(ValueError, match="labels"):
    metrics.auc(s, jnp.zeros(3))
  with pytest.raises(ValueError, match="where"):
    metrics.logloss(s, jnp.zeros(4), where=jnp.ones(5, bool))
  with pytest.raises(ValueError, match="groups"):
    metrics.gauc(s, jnp.zeros(4), jnp.zeros(3, int))
  with pytest.raises(TypeError, match="groups"):
    metrics.gauc(s, jnp.zeros(4), jnp.zeros(4))
  with pytest.raises(ValueError, match="num_bins"):
    metrics.expected_calibration_error(s, jnp.zeros(4), num_bins=0)
  with pytest.raises(ValueError, match="labels must be 0 or 1"):
    metrics.ctr_metrics([0., 1.], [0.5, 1.])
  with pytest.raises(ValueError, match="logits must be finite"):
    metrics.ctr_metrics([np.nan, 1.], [0, 1])
  with pytest.raises(ValueError, match="groups"):
    metrics.ctr_metrics([0., 1.], [0, 1], groups=[1, 2, 3])
