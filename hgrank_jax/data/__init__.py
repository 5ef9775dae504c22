"""Data: feature specs, the bundled KuaiRand subset, splits and in-memory batching."""

from hgrank_jax.data.dataset import SPLITS, Dataset
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature, embedding_size
from hgrank_jax.data.inmemory import MASK, ArrayBatcher, eval_batches
from hgrank_jax.data.registry import (available_datasets, load_dataset, parse_dataset_name,
                                      register_dataset)
from hgrank_jax.data.splits import per_user_split_sizes, split_rows
from hgrank_jax.data.stats import split_stats, user_activity_groups
from hgrank_jax.data.csv_core import CsvFormatError, MalformedRows, encode_categories, read_csv
from hgrank_jax.data.pipeline import (BlockSource, StreamingBatcher, group_into_lists,
                                      lists_from_rows, streaming_eval_batches)
