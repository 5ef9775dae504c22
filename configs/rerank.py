r"""Layer 3 reranking comparison on the simulator's request lists (or official KuaiRand logs).

  python -m launch.rerank --config configs/rerank.py                  # writes runs/rerank/
  python -m launch.rerank --config configs/rerank.py:runlocal --workdir /tmp/rerank
  python -m launch.rerank --config configs/rerank.py:kuairand --workdir runs/rerank_kuairand \
      --config.kuairand.manual_dir=/path/to/KuaiRand-1K/data

``--workdir results/rerank`` regenerates the committed table; without it, results
go to runs/ (ignored by git) and the checkout stays as it was.

Every reranker turns the n = 50 candidates of a request (sorted by the
simulator's imperfect initial ranker) into a final list of k = 10 under the
quota "at most ``max_count`` items of one category and no two adjacent items
of one category (``max_run``)". Heuristic parameters are chosen on validation
requests by true list utility; the learned rerankers train on the training
requests (``num_seeds`` seeds each); all rows are measured on the test
requests. The "+ quota" learned rows add ``quota_weight`` times the soft quota
penalty to the training loss and decode under the constraints (PRM through the
constrained greedy on its scores, Seq2Slate by masking every position to the
greedy's feasible picks); their lambda is chosen from ``quota_grid`` by
validation true utility (``dual_step`` > 0 would switch on dual ascent on the
validation violation of the unconstrained lists instead). "Seq2Slate + quota,
REINFORCE" fine-tunes each seed's Seq2Slate + quota by policy gradient on the
true utility; "generator-evaluator" lets a learned list evaluator pick among
feasible proposals of that seed's PRM + quota and Seq2Slate + quota.
``runlocal`` shrinks everything to a smoke run (a few minutes on a loaded
2-core CPU, mostly compilation).

``--config.scorer_workdir=DIR`` hands the simulator lists' initial ranking to
a Layer 1 scorer trained by ``launch.train`` on the simulator's logs
(``configs/simulator.py``; hgrank_jax/experiments/layer1_scores.py): the lists come
from that run's world and are sorted by its serving logits.

``kuairand`` (combinable with ``runlocal``: ``kuairand,runlocal``) builds one
list per user and day from the official logs in ``kuairand.manual_dir``
(hgrank_jax/data/official/kuairand_lists.py): release ``1k`` by default (Pure logs about
two exposures per user and day, too few for lists), candidates sorted by the
video's smoothed click rate on earlier dates, the last ``test_days`` dates as
the test split and the ``valid_days`` before them as validation, at most
``max_lists`` requests per split (a seeded subset). Methods are selected and
scored on the observed labels ("label utility", the DCG of ``label`` with
``repeat_decay`` for repeated categories), never on true click probabilities,
which logs do not have. Categories are the videos' first tags and the business
line their video type; both counts come from the data. The quota is the
simulator's (``max_count``, ``max_run``); where a day's candidates cannot meet
it, the constrained methods fill the list best effort and rerank.md reports the
share of test lists where it can be met.
"""

import ml_collections

from configs import common

VARIANTS = ("runlocal", "kuairand")


def get_config(arg=None):
  """The config; ``arg``: comma-separated names from ``VARIANTS``."""
  variants = common.parse_variants(arg, VARIANTS, __file__)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "simulator"      # or "kuairand"
  # Simulator lists: a launch.train workdir trained on synthetic:<view> replaces
  # the simulator's initial ranker (lists then come from that run's world).
  config.scorer_workdir = ""
  config.kuairand = ml_collections.ConfigDict({
      "manual_dir": "", "release": "1k", "label": "is_click", "min_candidates": 20,
      "prior_strength": 20.0, "repeat_decay": 0.8, "valid_days": 3, "test_days": 7,
      "max_lists": (20000, 1000, 1000),
  })
  # Simulator lists: count and split (kuairand splits by date instead).
  config.num_lists = 2000
  config.num_train = 1500
  config.num_valid = 250            # the test split is the rest
  config.num_candidates = 50
  config.list_length = 10
  # The simulator's vocabularies; kuairand replaces both with the data's.
  config.num_categories = 20        # SimulatorConfig.num_categories
  config.num_business = 4           # len(SimulatorConfig.business_lines)
  config.max_count = 2
  config.max_run = 1
  config.grids = ml_collections.ConfigDict({
      "mmr_lam": (0.1, 0.3, 0.5, 0.7, 0.9),
      "dpp_alpha": (0.25, 0.5, 1.0, 2.0, 4.0),
      "calibrated_lam": (0.3, 0.6, 0.9),
      "coverage_floor": (0.1, 1.0, 10.0),
  })
  config.num_seeds = 3
  config.train = ml_collections.ConfigDict({
      "hidden": 32, "num_heads": 4, "num_layers": 2, "num_steps": 200, "batch_size": 64,
      "learning_rate": 1e-3, "temperature": 0.1, "sort_method": "softsort", "dual_every": 50,
  })
  config.learned = ml_collections.ConfigDict({
      "prm": {"label": "PRM", "model": "prm", "quota_weight": 0.0, "dual_step": 0.0},
      "prm_quota": {"label": "PRM + quota", "model": "prm", "quota_weight": 0.005,
                    "dual_step": 0.0, "select_quota_weight": True},
      "seq2slate": {"label": "Seq2Slate", "model": "seq2slate", "quota_weight": 0.0,
                    "dual_step": 0.0},
      "seq2slate_quota": {"label": "Seq2Slate + quota", "model": "seq2slate",
                          "quota_weight": 0.005, "dual_step": 0.0, "select_quota_weight": True},
      # Policy gradient on the true utility, from the Seq2Slate + quota model
      # of the same seed, sampling and decoding under the quota masks.
      "seq2slate_reinforce": {"label": "Seq2Slate + quota, REINFORCE", "model": "seq2slate",
                              "init_from": "seq2slate_quota", "constrain": True,
                              "reinforce_steps": 150, "reinforce_samples": 8,
                              "reinforce_learning_rate": 3e-4},
  })
  config.learned_order = ("prm", "prm_quota", "seq2slate", "seq2slate_quota",
                          "seq2slate_reinforce")
  # lambda of the "+ quota" rows, chosen by validation true utility (seed 0).
  config.quota_grid = (0.005, 0.05)
  # Generator: constrained greedy on the PRM + quota scores and on Gumbel
  # perturbations of them, plus the Seq2Slate + quota beams; evaluator: a
  # one-layer transformer over the list regressing the true utility. The
  # perturbation noise is chosen on validation from noise_grid.
  config.generator_evaluator = ml_collections.ConfigDict({
      "label": "generator-evaluator", "beam_width": 4, "noise_grid": (0.25, 0.5, 1.0),
      "num_perturbations": 8, "noise": 0.5, "train_noise": (0.25, 1.0), "hidden": 32,
      "num_heads": 4, "num_layers": 1, "num_steps": 300, "batch_size": 32,
      "learning_rate": 1e-3,
  })
  # Quota weights of the PRM sweep behind pareto.png (one seed each).
  config.pareto_weights = (0.0, 0.01, 0.05, 0.2)
  if "kuairand" in variants:
    config.dataset = "kuairand"
  if "runlocal" in variants:
    config.num_lists = 300
    config.num_train = 200
    config.num_valid = 50
    config.num_seeds = 1
    config.train.num_steps = 20
    config.train.dual_every = 10
    config.pareto_weights = (0.0, 0.1)
    config.quota_grid = (0.005,)
    config.learned.seq2slate_reinforce.reinforce_steps = 10
    config.generator_evaluator.num_steps = 20
    config.generator_evaluator.noise_grid = (0.5,)
    config.kuairand.max_lists = (300, 50, 100)
  return config
