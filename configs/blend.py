r"""Layer 2 blending experiment: calibration, multipliers, shading, pacing, governance.

Full run (about 3 minutes on 2 CPU cores), writing runs/blend/ (ignored by git;
``--workdir results/blend`` regenerates the committed tables instead):

  python -m launch.blend --config configs/blend.py

Small run for a laptop or CI (a few seconds of traffic):

  python -m launch.blend --config configs/blend.py:runlocal --workdir /tmp/blend

Override any field, e.g. ``--config.win_model=direct`` or
``--config.traffic.num_days=2``.
"""

import ml_collections

from configs import common

NAN = float("nan")
VARIANTS = ("runlocal",)


def get_config(arg=None):
  """Returns the experiment config; ``arg="runlocal"`` shrinks it."""
  variants = common.parse_variants(arg, VARIANTS, __file__)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.calibration_method = "isotonic"   # platt | isotonic | quantile | bucketed
  config.multiplier_model = "table"        # table (per segment) | net (Flax MLP)
  config.multiplier_prior = 20.0
  config.win_model = "landscape"           # landscape | direct
  # Names of the variants to run (see experiment.variants); empty runs all.
  # The target checks need "+ pacing (unshaded)", "+ shading with pacing" and
  # "+ governance".
  config.variants = ()
  # The seed's cost constraint: the ad line capped on score spent per slot at
  # this fraction of its unconstrained spend, shaded vs uniformly throttled.
  config.spend_check = True
  config.spend_cap_fraction = 0.6

  traffic = ml_collections.ConfigDict()
  traffic.seed = 0
  traffic.num_users = 2000
  traffic.num_items = 5000
  traffic.pool_requests = 16_000
  traffic.candidates_per_queue = 30
  traffic.queue_length = 6
  traffic.num_slots = 8
  traffic.ranker_noise = 0.6
  traffic.segment_effect_sigma = 0.5
  traffic.num_days = 3
  traffic.steps_per_day = 96
  traffic.max_requests_per_step = 256
  traffic.trough_volume = 0.3
  traffic.warmup_days = 0.75
  traffic.window_steps = 16
  traffic.feedback_steps = 4.0
  traffic.monetized = ("live", "ad")
  traffic.max_monetized = 3
  traffic.no_adjacent_monetized = True
  # Per business line (article, short_video, live, ad): share caps and floors.
  traffic.caps = (NAN, NAN, 0.12, 0.12)
  traffic.floors = (0.25, 0.0, 0.0, 0.0)
  # (line, start day, duration in days, share of the queue kept)
  traffic.shocks = (("live", 1.5, 0.3, 0.0),)
  traffic.log_impressions = 40_000
  config.traffic = traffic

  # Controllers without governance: each business's PI on its own sliding
  # window of load, undamped.
  config.gains = ml_collections.ConfigDict(dict(
      kp=1.0, ki=0.3, kd=0.0, smoothing=1.0, max_step=1e9, max_lambda=1e3))
  # With governance: the shared ledger as feedback (see TrafficConfig),
  # derivative action, a low-pass on lambda and a step limit.
  config.governed_gains = ml_collections.ConfigDict(dict(
      kp=2.5, ki=0.8, kd=1.0, smoothing=0.8, max_step=0.5, max_lambda=1e3))

  if "runlocal" in variants:
    traffic.num_users = 400
    traffic.num_items = 1000
    traffic.pool_requests = 2000
    traffic.num_days = 2
    traffic.steps_per_day = 24
    traffic.max_requests_per_step = 64
    traffic.window_steps = 4
    traffic.feedback_steps = 2.0
    traffic.warmup_days = 0.5
    traffic.shocks = (("live", 1.2, 0.3, 0.0),)
    traffic.log_impressions = 8000
    config.spend_check = False
  return config
