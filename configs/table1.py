r"""The paper's experiments (Tables 1-3, Figure 4) on one dataset.

  python -m launch.reproduce --config configs/table1.py                      # bundled KuaiRand, full
  python -m launch.reproduce --config configs/table1.py:kuairand_sig,quick   # README main job
  python -m launch.reproduce --config configs/table1.py:simulator
  python -m launch.reproduce --config configs/table1.py:simulator_profiled,core
  python -m launch.reproduce --config configs/table1.py:kuairand_pure \
      --config.train.manual_dir=/path/to/KuaiRand-Pure/data
  python -m launch.reproduce --config configs/table1.py:kuairand_sig,quick \
      --workdir results/kuairand_sig_quick   # regenerates the committed tables

Datasets: kuairand_sig (default), simulator, simulator_profiled (no position bias,
an observed user profile in the user tower; see configs/simulator.py),
kuairand_pure, taobao_ad, movielens.
Variants: core (LogLoss, ListCE and GroupCE only, 5 seeds at default
hyperparameters, Tables 1 and 2, in <dataset>_core/), quick (2 seeds, no grid,
Tables 1 and 2 only, in <dataset>_quick/: about 7 minutes on 2 CPU cores),
runlocal (seconds; for tests). Every row's hyperparameters are chosen on
validation GAUC with seed 0 from the declared grid; the test split is never used
for a choice.

Where files go: tables and plots into ``--workdir``, ``runs/<name>/`` by default
(e.g. ``runs/kuairand_sig_quick/``), a folder that ``.gitignore`` keeps out of the
checkout, so a run never rewrites the committed tables. The committed
``results/`` tables are regenerated on purpose, with the same command plus
``--workdir results/<name>``. Finished runs are cached under ``<workdir>/runs``
(ignored by git in both places) by config hash, so an interrupted reproduction
continues where it stopped.
"""

import importlib

import ml_collections

from configs import common

# dataset variant -> (config module, its variant)
DATASET_CONFIGS = {"kuairand_sig": ("kuairand_sig", None), "simulator": ("simulator", None),
                   "simulator_profiled": ("simulator", "profiled"),
                   "kuairand_pure": ("kuairand_pure", None), "taobao_ad": ("taobao_ad", None),
                   "movielens": ("movielens", None)}
SIZES = ("quick", "core", "runlocal")
VARIANTS = (*DATASET_CONFIGS, *SIZES)


def _row(key, name, overrides, grid=None):
  return ml_collections.ConfigDict(dict(key=key, name=name, overrides=overrides, grid=grid or {}))


def _objective(variant):
  return {"objective": dict(common.OBJECTIVE_VARIANTS[variant])}


def get_config(arg=None):
  """The tables' config; ``arg``: at most one dataset and any of ``SIZES``, comma-separated."""
  variants = common.parse_variants(arg, VARIANTS, __file__)
  datasets = [v for v in variants if v in DATASET_CONFIGS]
  if len(datasets) > 1:
    raise ValueError(f"configs/table1.py: one dataset per run, got {', '.join(datasets)}")
  name = datasets[0] if datasets else "kuairand_sig"
  module_name, dataset_variant = DATASET_CONFIGS[name]
  module = importlib.import_module(f"configs.{module_name}")
  train_variants = [v for v in (dataset_variant, "runlocal" if "runlocal" in variants else None) if v]
  train = module.get_config(",".join(train_variants) or None)

  lr_grid = [1e-3, 3e-3]
  weight_grid = [0.1, 1.0]
  codes_grid = {"num_levels": [3, 2], "codebook_size": [8, 16]}
  config = ml_collections.ConfigDict()
  config.name = name                 # the default workdir is runs/<name>
  config.command_config = f"configs/table1.py:{arg or name}"
  config.train = train
  config.runs_dir = ""               # "" -> <workdir>/runs
  config.num_seeds = 5
  config.selection_metric = "gauc"
  config.tables = ("table1", "table3", "figure4")
  config.table1_rows = [
      _row("logloss", "LogLoss", _objective("logloss"), {"learning_rate": lr_grid}),
      _row("pairwise", "LogLoss + PairwiseLogistic", _objective("pairwise"),
           {"learning_rate": lr_grid, "objective": {"ranking_weight": weight_grid}}),
      _row("softmax", "LogLoss + SoftmaxCE", _objective("softmax"),
           {"learning_rate": lr_grid, "objective": {"ranking_weight": weight_grid}}),
      _row("listce", "LogLoss + ListCE", _objective("listce"),
           {"learning_rate": lr_grid, "objective": {"ranking_weight": weight_grid}}),
      _row("jrc", "JRC", _objective("jrc"), {"learning_rate": lr_grid}),
      _row("groupce", "GroupCE", _objective("groupce"),
           {"learning_rate": lr_grid, "hgr": codes_grid}),
  ]
  groupce = _objective("groupce")
  config.table3_rows = [
      _row("groupce", "GroupCE", groupce),
      _row("no_hier", "w/o hierarchical loss", {**groupce, "hgr": {"hierarchical_weight": 0.0}}),
      _row("no_aux", "w/o quantized auxiliary loss", {**groupce, "hgr": {"aux_weight": 0.0}}),
      _row("random_codes", "random fixed codes", {**groupce, "hgr": {"code_source": "random"}}),
  ]
  config.figure4 = ml_collections.ConfigDict(dict(codebook_sizes=(4, 8, 16, 32),
                                                  levels=(1, 2, 3, 4), num_seeds=1))
  if "quick" in variants:
    config.name = f"{name}_quick"   # its own results folder: never overwrites the full tables
    config.num_seeds = 2
    config.tables = ("table1",)
    for row in config.table1_rows:
      row.grid = {}
  if "core" in variants:
    # The paper's central comparison with enough seeds to resolve it: LogLoss, ListCE
    # and GroupCE at their defaults, 5 seeds, Table 1 only.
    config.name = f"{name}_core"
    config.tables = ("table1",)
    config.table1_rows = [row for row in config.table1_rows
                          if row.key in ("logloss", "listce", "groupce")]
    for row in config.table1_rows:
      row.grid = {}
  if "runlocal" in variants:
    config.num_seeds = 2
    config.figure4.codebook_sizes = (4, 8)
    config.figure4.levels = (1, 2)
    for row in config.table1_rows:
      row.grid = {"learning_rate": [1e-3, 3e-3]} if row.key == "logloss" else {}
  return config
