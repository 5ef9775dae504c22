"""Shared pieces of the training configs: defaults, objective variants, runlocal shrinking.

Config files import :func:`base_config` and :func:`apply_variants`; a variant
string such as ``"runlocal,groupce"`` selects the objective and the size.
"""

import ml_collections

# Objective variants: the rows of the paper's Table 1.
OBJECTIVE_VARIANTS = {
    "logloss": dict(name="pointwise", loss="logloss"),
    "pairwise": dict(name="pointwise", loss="logloss+pairwise_logistic"),
    "softmax": dict(name="pointwise", loss="logloss+softmax_ce"),
    "listce": dict(name="pointwise", loss="logloss+list_ce"),
    "jrc": dict(name="jrc", loss="jrc"),
    "groupce": dict(name="hgr", loss="hgr"),
}


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every dataset (the paper's settings where it gives them)."""
  config = ml_collections.ConfigDict()
  config.dataset = "kuairand_sig:paper"
  config.manual_dir = ""         # official datasets: the directory with their files
  config.split_seed = 0          # seed of the dataset split (views that re-split)
  config.seed = 0                # model init, data order, dropout
  config.num_devices = 0         # 0: every device
  config.batch_size = 4096       # the paper's mini-batch
  config.eval_batch_size = 8192
  config.num_train_steps = 20_000
  config.eval_every_steps = 1000
  config.log_every_steps = 100
  config.learning_rate = 1e-4    # the paper's AdamW learning rate
  config.weight_decay = 1e-4
  config.schedule = "constant"
  config.warmup_steps = 0
  config.grad_clip_norm = 0.0    # 0 disables clipping
  config.max_checkpoints = 2
  config.checkpoint_every_steps = 0   # 0: checkpoint at every evaluation only
  config.data_source = "memory"       # or "streaming": array_record blocks at data_path
  config.data_path = ""               # see benchmarks/pipeline.py and docs/scaling.md
  config.stream_window_blocks = 8     # blocks shuffled together when streaming
  # How the run executes, not what it computes (never part of a run's identity):
  config.steps_per_dispatch = 0       # train steps per jitted call; 0: 1 on CPU, 32 on GPU/TPU
  config.data_placement = "auto"      # "device": train split resident on the devices; "host";
                                      # "auto": device on GPU/TPU when it fits, else host
  config.checkpoint_mode = "auto"     # "async": saves overlap training; "async_skip": also
                                      # skip a periodic save while the last is being written;
                                      # "sync"; "auto": async on GPU/TPU, sync on CPU
  config.vmap_seeds = False           # tables: a row's new seeds train as one vmapped program
                                      # on one device (train.seeds; no checkpoints while it trains)

  config.model = ml_collections.ConfigDict(dict(
      name="dnn", hidden_layers=(256, 128), dropout_rate=0.0,
      user_tower_layers=(), item_tower_layers=(), bias_features=()))
  config.objective = ml_collections.ConfigDict(dict(
      name="pointwise", loss="logloss", ranking_weight=1.0, lists="batch", jrc_alpha=0.5))
  config.hgr = ml_collections.ConfigDict(dict(
      num_levels=3, codebook_size=8, aux_weight=1.0, hierarchical_weight=1.0,
      aux_updates_main_net=False, decay=0.99, dead_code_threshold=1.0, kmeans_init=True,
      code_source="learned"))
  config.early_stopping = ml_collections.ConfigDict(dict(metric="gauc", patience=5, min_delta=0.0))
  return config


def official_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
  """An official dataset (files read from config.manual_dir) at the paper's settings.

  Paper settings (seed 002, section 6.1.3): batch 4096, AdamW with learning rate
  1e-4, embedding width max(floor(log2(cardinality)) * 2, 16), a 2-4 layer main
  network of 64-512 units, codebook size 4-32 and 1-4 levels for GroupCE,
  evaluation every 1000 steps with early stopping on validation GAUC. Variants as
  in configs/kuairand_sig.py (logloss, pairwise, softmax, listce, jrc, groupce,
  runlocal). The files are read into memory; nothing is downloaded.
  """
  config = base_config()
  config.dataset = dataset
  config.num_train_steps = 100_000
  config.eval_every_steps = 1000
  config.log_every_steps = 100
  config.model.hidden_layers = (512, 256, 128)
  return apply_variants(config, arg)


def apply_variants(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies comma-separated variants: objective names and ``runlocal``."""
  for variant in filter(None, (arg or "").split(",")):
    if variant in OBJECTIVE_VARIANTS:
      config.objective.update(OBJECTIVE_VARIANTS[variant])
    elif variant == "runlocal":
      config.batch_size = 256
      config.eval_batch_size = 1024
      config.num_train_steps = 20
      config.eval_every_steps = 10
      config.log_every_steps = 5
      config.model.hidden_layers = (32, 16)
    else:
      raise ValueError(f"unknown config variant {variant!r}; known: runlocal, "
                       + ", ".join(OBJECTIVE_VARIANTS))
  return config
