"""Layer 2 blending: calibration, multipliers, order-preserving merge, shading and pacing.

``calibration`` makes business lines' scores comparable, ``mixer`` applies
personalised multipliers and merges the sorted business queues under page
rules, ``shading`` turns a business's value into a PK score against a win-rate
model, ``pacing`` tracks each business's shadow price with a PI(D) controller
under platform governance, and ``simulate`` runs all of it on a stream of
simulated traffic.
"""

from hgrank_jax.blend import calibration, mixer, pacing, shading
from hgrank_jax.blend.calibration import reliability_curve, restore_params, save_params
from hgrank_jax.blend.mixer import (MultiplierNet, fit_multiplier_net, fit_segment_multipliers,
                                    merge_queues, mix_scores)
from hgrank_jax.blend.pacing import (ControllerGains, ControllerState, anchor_update,
                                     controller_update, init_controller, relative_error,
                                     shared_errors, validate_targets)
from hgrank_jax.blend.shading import (fit_direct_win_rate, fit_landscape, logistic_win_rate,
                                      lognormal_win_rate, optimal_lambda, shade)
