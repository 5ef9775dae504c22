"""Data: feature specs, datasets (bundled KuaiRand subset, official files, the simulator),
splits, in-memory batching and the streaming pipeline."""

from hgrank_jax.data.dataset import SPLITS, Dataset
from hgrank_jax.data.features import CategoricalFeature, FeatureSpec, NumericFeature, embedding_size
from hgrank_jax.data.inmemory import MASK, ArrayBatcher, eval_batches
from hgrank_jax.data.registry import (available_datasets, load_dataset, parse_dataset_name,
                                      register_dataset)
from hgrank_jax.data.splits import per_user_split_sizes, split_rows
from hgrank_jax.data.stats import split_stats, user_activity_groups
from hgrank_jax.data.formats.csv_core import CsvFormatError, MalformedRows, encode_categories, read_csv
from hgrank_jax.data.pipeline import (BlockSource, StreamingBatcher, group_into_lists,
                                      lists_from_rows, streaming_eval_batches)
from hgrank_jax.data.sim.synthetic import (LogChunk, RequestLists, SimulatedLogs, SimulatorConfig,
                                       SimWorld, build_world, concat_lists, concat_log_chunks,
                                       config_for_view, iter_list_chunks, iter_log_chunks,
                                       list_chunk, list_utility, log_chunk, log_feature_spec,
                                       make_dataset, make_request_lists, true_scores)
