"""Lifting a one-list function to any batch of lists, shared by the rerankers and decoders.

Every reranker is written for one candidate list and lifted to any number of
leading batch axes here: the leading axes are flattened into one, the
single-list function is vmapped over it, and the result is reshaped back. One
vmap over a flat axis compiles to the same program whatever the batch rank.
With ``chunk_size`` the lists are vmapped in chunks of that many and the
chunks run one after another (``lax.map`` with ``batch_size``): a greedy
reranker re-reads every list's candidate arrays at each of its k steps, and a
chunk whose arrays fit in the CPU cache is read from cache instead of memory
(about 2.5x faster for the DPP at n = 500, d = 64 on a 2-core CPU).
"""

CHUNK_SIZE = 32

import jax
import jax.numpy as jnp


def valid_mask(where, shape):
  """Boolean ``[..., n]`` validity mask; None means every candidate is valid."""
  if where is None:
    return jnp.ones(shape, bool)
  return jnp.broadcast_to(jnp.asarray(where, bool), shape)


def vmap_lists(single_list_fn, batch_shape, *arrays, chunk_size=None):
  """Applies ``single_list_fn`` to every list of ``arrays``.

  Args:
    single_list_fn: function of one list's arrays (batch axes removed); it
      returns a pytree of arrays.
    batch_shape: the leading axes shared by every array.
    *arrays: arrays of shape ``batch_shape + per_list_shape``.
    chunk_size: optional static int; vmap this many lists at a time.

  Returns:
    The pytree of ``single_list_fn`` outputs with ``batch_shape`` prepended.
  """
  num_lists = 1
  for size in batch_shape:
    num_lists *= size
  flat = [jnp.reshape(a, (num_lists,) + a.shape[len(batch_shape):]) for a in arrays]
  if chunk_size is None or num_lists <= chunk_size:
    result = jax.vmap(single_list_fn)(*flat)
  else:
    result = jax.lax.map(lambda xs: single_list_fn(*xs), flat, batch_size=chunk_size)
  return jax.tree_util.tree_map(lambda x: jnp.reshape(x, tuple(batch_shape) + x.shape[1:]), result)
