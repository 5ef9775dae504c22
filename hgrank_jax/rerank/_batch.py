"""Batching helper shared by the inference rerankers.

Every reranker is written for one candidate list and lifted to any number of
leading batch axes here: the leading axes are flattened into one, the
single-list function is vmapped over it, and the result is reshaped back. One
vmap over a flat axis compiles to the same program whatever the batch rank.
"""

import jax
import jax.numpy as jnp


def valid_mask(where, shape):
  """Boolean ``[..., n]`` validity mask; None means every candidate is valid."""
  if where is None:
    return jnp.ones(shape, bool)
  return jnp.broadcast_to(jnp.asarray(where, bool), shape)


def vmap_lists(single_list_fn, batch_shape, *arrays):
  """Applies ``single_list_fn`` to every list of ``arrays``.

  Args:
    single_list_fn: function of one list's arrays (batch axes removed); it
      returns a pytree of arrays.
    batch_shape: the leading axes shared by every array.
    *arrays: arrays of shape ``batch_shape + per_list_shape``.

  Returns:
    The pytree of ``single_list_fn`` outputs with ``batch_shape`` prepended.
  """
  num_lists = 1
  for size in batch_shape:
    num_lists *= size
  flat = [jnp.reshape(a, (num_lists,) + a.shape[len(batch_shape):]) for a in arrays]
  result = jax.vmap(single_list_fn)(*flat)
  return jax.tree_util.tree_map(lambda x: jnp.reshape(x, tuple(batch_shape) + x.shape[1:]), result)
