r"""Prints a dataset's summary: rows, users, items, positives per split, cold/warm users.

  python -m launch.data_stats --dataset kuairand_sig:given
  python -m launch.data_stats --dataset kuairand_sig:paper --seed 0 --json out.json
  python -m launch.data_stats --dataset kuairand:pure --manual_dir ~/data/KuaiRand-Pure/data
  python -m launch.data_stats --dataset movielens:1m --manual_dir ~/data/ml-1m

Official datasets (kuairand, movielens, taobao_ad, taobao_userbehavior) read the
files from --manual_dir; see docs/datasets.md for where to get them. With
--tfds_dir they are also prepared there as TFDS array_record blocks for the
streaming pipeline (hgrank_jax.data.pipeline), and the summary is read back
from that build:

  python -m launch.data_stats --dataset kuairand:pure --manual_dir DIR --tfds_dir ~/tfds

Bad input (missing files, a malformed row, an unknown dataset or view) ends the
run with exit status 1 and one message naming the file, line or name, without
a traceback.

Unlike launch.train, launch.reproduce, launch.rerank and launch.blend, this
launcher takes no ``--config`` and no ``--workdir``: it inspects a dataset and
runs no experiment, so there is no config to record, no run state to resume
and nothing to collect in a folder. Its input is a dataset name (the
``config.dataset`` of a training config) and its output the printed summary,
plus the one file ``--json`` names and the TFDS build ``--tfds_dir`` names.
"""

import json

from absl import app, flags

from hgrank_jax.data import load_dataset, parse_dataset_name, split_stats, user_activity_groups
from hgrank_jax.data.stats import format_table

_DATASET = flags.DEFINE_string("dataset", "kuairand_sig:paper", "name[:view], e.g. kuairand_sig:given")
_SEED = flags.DEFINE_integer("seed", 0, "split seed for views that re-split")
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "directory with the official files (official datasets only)")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None,
                                 "prepare the official dataset as TFDS array_record here "
                                 "(split with --seed) and summarise the build")
_SKIP_MALFORMED = flags.DEFINE_bool("skip_malformed", False,
                                    "skip and count malformed rows instead of failing")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    dataset = _load()
  except (FileNotFoundError, ValueError) as e:  # CsvFormatError is a ValueError
    # A user's input problem (missing files, a malformed row, a bad name): the
    # message names what and where; a traceback would only bury it.
    raise SystemExit(f"launch.data_stats: error: {e}") from e
  _summarise(dataset)


def _load():
  """The dataset the flags name (prepared as TFDS first when --tfds_dir is given)."""
  kwargs = {}
  if _MANUAL_DIR.value is not None:
    kwargs["manual_dir"] = _MANUAL_DIR.value
  if _SKIP_MALFORMED.value:
    kwargs["skip_malformed"] = True
  if _TFDS_DIR.value is not None:
    # Imports TensorFlow Datasets (seconds): only a TFDS build needs it.
    from hgrank_jax.data.official import tfds_builders  # pylint: disable=g-import-not-at-top
    name, view = parse_dataset_name(_DATASET.value)
    if name not in tfds_builders.BUILDERS or _MANUAL_DIR.value is None:
      raise app.UsageError("--tfds_dir needs an official dataset "
                           f"({sorted(tfds_builders.BUILDERS)}) and --manual_dir")
    tfds_builders.prepare(name, view, manual_dir=_MANUAL_DIR.value, data_dir=_TFDS_DIR.value,
                          split_seed=_SEED.value, skip_malformed=_SKIP_MALFORMED.value)
    dataset = tfds_builders.load_prepared(name, view, data_dir=_TFDS_DIR.value)
  else:
    dataset = load_dataset(_DATASET.value, seed=_SEED.value, **kwargs)
  return dataset


def _summarise(dataset):
  """Prints (and with --json writes) the summary of ``dataset``."""
  per_split = split_stats(dataset)
  groups = user_activity_groups(dataset)
  print(f"# {dataset.name}")
  for key, value in dataset.info.items():
    print(f"- {key}: {value}")
  print()
  print(format_table(per_split, ["rows", "users", "items", "positives", "positive_rate",
                                 "users_with_positive"]))
  print()
  print("Users by training rows (Table 2 groups: cold 1-20, warm 21-50, other > 50):")
  print(format_table({k: v for k, v in groups.items() if isinstance(v, dict)},
                     ["users", "test_users", "test_rows"]))
  print(f"- share of training users with at most 20 training rows: "
        f"{groups['users_at_most_20_train_rows_share']:.3f}")
  print(f"- test rows of users with no training row: {groups['test_rows_of_users_without_train_rows']}")
  print()
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"dataset": dataset.name, "info": dict(dataset.info), "splits": per_split,
                 "user_groups": groups}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
