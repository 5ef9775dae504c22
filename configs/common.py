"""Shared pieces of the configs: defaults, objective variants, runlocal shrinking, variant parsing.

Every config file reads its ``arg`` (the ``:variants`` part of ``--config
configs/X.py:variants``) with :func:`parse_variants`, which checks each
comma-separated name against the file's known variants. Training configs build
on :func:`base_config` and :func:`apply_variants`, where a variant string such
as ``"runlocal,groupce"`` selects the objective and the size.
"""

import os
from typing import Iterable, Sequence

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
# The variants every training config knows: the size, then the objectives.
TRAIN_VARIANTS = ("runlocal", *OBJECTIVE_VARIANTS)


def parse_variants(arg: str | Iterable[str] | None, known: Sequence[str],
                   config_file: str | None = None) -> list[str]:
  """The variant names in ``arg``, in order, each checked against ``known``.

  ``arg`` is the comma-separated ``:variants`` part of ``--config`` (empty names
  are skipped, a repeated name counts once) or an already split sequence. Any
  name outside ``known`` raises one ``ValueError`` that names it, the config file
  and every known variant.

  Args:
    arg: ``"runlocal,groupce"``, ``["runlocal", "groupce"]``, ``""`` or ``None``.
    known: the variants the config file accepts, in the order the error lists them.
    config_file: the file's ``__file__``, shown as ``configs/<name>.py`` in the error.

  Returns:
    The names, a ``list[str]`` in the order given.

  >>> parse_variants("runlocal,groupce", TRAIN_VARIANTS)
  ['runlocal', 'groupce']
  >>> parse_variants(None, TRAIN_VARIANTS)
  []
  >>> parse_variants("runlokal", ("runlocal", "kuairand"), "configs/rerank.py")
  Traceback (most recent call last):
  ...
  ValueError: configs/rerank.py: unknown config variant 'runlokal'; known: runlocal, kuairand
  """
  names = arg.split(",") if isinstance(arg, str) else list(arg or ())
  names = list(dict.fromkeys(name.strip() for name in names if name.strip()))
  unknown = [name for name in names if name not in known]
  if unknown:
    where = f"configs/{os.path.basename(config_file)}: " if config_file else ""
    plural = "s" if len(unknown) > 1 else ""
    raise ValueError(f"{where}unknown config variant{plural} {', '.join(map(repr, unknown))}; "
                     f"known: {', '.join(known)}")
  return names


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


def official_config(dataset: str, arg: str | None,
                    config_file: str | None = None) -> ml_collections.ConfigDict:
  """An official dataset (files read from config.manual_dir) at the paper's settings.

  Paper settings (section 6.1.3): batch 4096, AdamW with learning rate
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
  return apply_variants(config, arg, config_file)


def apply_variants(config: ml_collections.ConfigDict, arg: str | Iterable[str] | None,
                   config_file: str | None = None) -> ml_collections.ConfigDict:
  """Applies training variants (:data:`TRAIN_VARIANTS`): objective names and ``runlocal``.

  ``arg`` is parsed by :func:`parse_variants`; objectives apply in order, so the
  last one named wins. Returns ``config``, changed in place.

  >>> apply_variants(base_config(), "runlocal,groupce").objective.loss
  'hgr'
  """
  for variant in parse_variants(arg, TRAIN_VARIANTS, config_file):
    if variant in OBJECTIVE_VARIANTS:
      config.objective.update(OBJECTIVE_VARIANTS[variant])
    else:  # runlocal
      config.batch_size = 256
      config.eval_batch_size = 1024
      config.num_train_steps = 20
      config.eval_every_steps = 10
      config.log_every_steps = 5
      config.model.hidden_layers = (32, 16)
  return config
