"""Training: device meshes and shardings, and ``train_and_evaluate`` (the one train loop)."""

from hgrank_jax.train.sharding import (DATA_AXIS, batch_sharding, check_batch_divisible,
                                       data_mesh, enable_compilation_cache, replicated_sharding)


def __getattr__(name):
  # The loop imports hgrank_jax.data, which imports this package for its mesh
  # helpers; resolving the loop lazily keeps that import cycle-free.
  if name in ("train_and_evaluate", "Objective"):
    from hgrank_jax.train import loop, state  # pylint: disable=g-import-not-at-top
    return {"train_and_evaluate": loop.train_and_evaluate, "Objective": state.Objective}[name]
  raise AttributeError(f"module 'hgrank_jax.train' has no attribute {name!r}")
