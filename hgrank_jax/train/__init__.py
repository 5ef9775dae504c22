"""Training: device meshes and shardings (and, with the trainer, the train loop)."""

from hgrank_jax.train.sharding import (DATA_AXIS, batch_sharding, check_batch_divisible,
                                       data_mesh, enable_compilation_cache, replicated_sharding)
