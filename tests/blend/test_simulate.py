"""The traffic simulator and experiment at a tiny size: invariants, not tuned numbers."""

import dataclasses

import numpy as np
import pytest

from hgrank_jax.blend import pacing
from hgrank_jax.experiments import blend_report as report
from hgrank_jax.blend import simulate as sim

TINY = sim.TrafficConfig(num_users=200, num_items=600, pool_requests=300, num_days=1,
                         steps_per_day=16, max_requests_per_step=24, window_steps=3,
                         feedback_steps=2.0, warmup_days=0.25,
                         shocks=(("live", 0.5, 0.25, 0.0),), log_impressions=2000)


@pytest.fixture(scope="module")
def world():
  pool, lines, num_segments, effect = sim.build_pool(TINY)
  return pool, lines, num_segments, effect


def test_pool_queues_are_ranked_by_each_lines_own_score(world):
  pool, lines, num_segments, effect = world
  assert pool.raw.shape == (300, len(lines), TINY.queue_length)
  # Each line's raw score is a monotone map of its ranker's estimate, so the
  # queue (sorted by the estimate) is sorted by the raw score too.
  assert np.all(np.diff(pool.raw, axis=-1) <= 1e-6)
  assert np.all((pool.true_prob > 0) & (pool.true_prob < 1))
  assert pool.segment.max() < num_segments and effect.shape == (num_segments, len(lines))


def test_schedule_has_diurnal_volume_and_shock(world):
  _, lines, _, _ = world
  pool_index, active, queue_cut, volume = sim.request_schedule(TINY, lines)
  counts = active.sum(1)
  assert counts.max() == TINY.max_requests_per_step and counts.min() < counts.max() / 2
  hit = queue_cut[:, lines.index("live")] == 0
  np.testing.assert_array_equal(np.flatnonzero(hit), np.arange(8, 12))
  assert pool_index.max() < TINY.pool_requests and volume.shape == (16,)


def _policy(num_segments, num_businesses, **overrides):
  spec = dict(calibrate=False, calibration_method="platt", calibration_params=None,
              alpha=np.ones((num_segments, num_businesses), np.float32), pacing=False,
              shading=False, win_model="landscape", anchor=False, shared_accounting=False,
              gains=pacing.ControllerGains(kp=1.0, ki=0.3))
  spec.update(overrides)
  return sim.Policy(**spec)


def test_run_stream_accounting(world):
  pool, lines, num_segments, _ = world
  schedule = sim.request_schedule(TINY, lines)
  policy = _policy(num_segments, len(lines), pacing=True, shading=True, anchor=True)
  records = sim.run_stream(policy, TINY, pool, lines, schedule)
  # Every slot of every active request is filled when supply allows.
  np.testing.assert_allclose(records["wins"].sum(1), records["slots"])
  np.testing.assert_allclose(records["step_load"].sum(1), 1.0, rtol=1e-5)
  assert np.all(records["slots"] <= records["requests"] * TINY.num_slots)
  # Live has no supply during the shock.
  shock = slice(8, 12)
  assert np.all(records["step_load"][shock, lines.index("live")] == 0)
  # Uncontrolled lines never get a price; controlled prices are non-negative.
  kind, _ = sim.targets_of(TINY, len(lines))
  assert np.all(records["lam"][:, kind == 0] == 0) and np.all(records["lam"] >= 0)
  assert np.all(np.isfinite(records["mean_score"]))


def test_infeasible_targets_are_rejected(world):
  pool, lines, num_segments, _ = world
  bad = dataclasses.replace(TINY, floors=(0.6, 0.5, 0.0, 0.0))
  with pytest.raises(ValueError, match="minimum shares"):
    sim.run_stream(_policy(num_segments, len(lines)), bad, pool, lines,
                   sim.request_schedule(bad, lines))
  with pytest.raises(ValueError, match="one entry per business"):
    sim.targets_of(dataclasses.replace(TINY, caps=(0.1,)), len(lines))


def test_main_columns_follow_the_issue():
  columns = ["platform value / request", "engagement / request", "ad load error",
             "ad load error (no shock)", "ad max excess", "oscillation amplitude", "score drift",
             "score drift trend"]
  assert report._main_columns(columns) == [  # pylint: disable=protected-access
      "platform value / request", "engagement / request", "ad load error",
      "ad load error (no shock)", "oscillation amplitude", "score drift"]


def test_spend_caps_count_score_spent(world):
  pool, lines, num_segments, _ = world
  ad = lines.index("ad")
  spend_config = dataclasses.replace(
      TINY, cap_measure="spend", caps=(np.nan, np.nan, np.nan, 0.05), floors=(0.0,) * 4)
  policy = _policy(num_segments, len(lines), pacing=True)
  records = sim.run_stream(policy, spend_config, pool, lines,
                           sim.request_schedule(spend_config, lines))
  # The ad's "load" is its spend per filled slot; the others stay slot shares.
  np.testing.assert_allclose(records["step_load"][:, ad],
                             records["spend"][:, ad] / records["slots"], rtol=1e-5)
  others = [b for b in range(len(lines)) if b != ad]
  np.testing.assert_allclose(records["step_load"][:, others],
                             records["wins"][:, others] / records["slots"][:, None], rtol=1e-5)
  with pytest.raises(ValueError, match="cap_measure"):
    sim.targets_of(dataclasses.replace(TINY, cap_measure="cost"), len(lines))
