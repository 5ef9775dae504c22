"""Parallelism: the data-parallel device mesh, batch and replicated shardings, and
multi-process initialisation. The bottom layer with :mod:`hgrank_jax.ops`: every
other package may import it, it imports no other ``hgrank_jax`` package."""

from hgrank_jax.parallel.sharding import (DATA_AXIS, batch_sharding, check_batch_divisible,
                                          data_mesh, enable_compilation_cache, global_batch,
                                          replicated_sharding)
