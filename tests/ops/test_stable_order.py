"""stable_order's host (numpy) and XLA paths against numpy's stable argsort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgrank_jax.ops import stable_order


def _keys():
  rng = np.random.default_rng(0)
  keys = rng.normal(size=(6, 37)).astype(np.float32)
  keys[1] = np.round(keys[1])  # ties keep index order
  keys[2, ::3] = np.inf
  keys[3, ::4] = np.nan
  keys[3, 1::4] = -np.inf
  keys[4, :] = 0.0
  keys[4, ::2] = -0.0  # equal to 0.0: index order
  keys[5, 5] = -np.nan  # any NaN sorts last
  return keys


@pytest.mark.parametrize("implementation", ("host", "xla", "auto"))
def test_order_and_inverse_match_numpy(implementation):
  keys = _keys()
  order, inverse = jax.jit(lambda k: stable_order.stable_order(
      k, implementation=implementation))(jnp.asarray(keys))
  want = np.argsort(np.where(np.isnan(keys), np.inf, keys), axis=-1, kind="stable")
  # numpy puts NaN after inf only via the mapping above when no NaN ties an
  # inf; break those ties as jnp does: every NaN after every inf.
  nan_last = np.argsort(np.isnan(keys[np.arange(len(keys))[:, None], want]), axis=-1,
                        kind="stable")
  want = np.take_along_axis(want, nan_last, axis=-1)
  np.testing.assert_array_equal(order, want)
  np.testing.assert_array_equal(
      np.take_along_axis(np.asarray(order), np.asarray(inverse), axis=-1),
      np.broadcast_to(np.arange(keys.shape[-1]), keys.shape))
  np.testing.assert_array_equal(order, jnp.argsort(jnp.asarray(keys), axis=-1, stable=True))


def test_float64_and_integer_keys_and_vmap():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    keys = jnp.asarray(np.round(rng.normal(size=(3, 4, 9)), 1))
    order, _ = jax.jit(jax.vmap(lambda k: stable_order.stable_order(k, implementation="host")))(keys)
    np.testing.assert_array_equal(order, np.argsort(np.asarray(keys), axis=-1, kind="stable"))
  ints = jnp.asarray(rng.integers(0, 3, size=(5, 11)), jnp.int32)
  order, _ = stable_order.stable_order(ints, implementation="host")
  np.testing.assert_array_equal(order, np.argsort(np.asarray(ints), axis=-1, kind="stable"))


def test_bad_arguments():
  with pytest.raises(ValueError, match="implementation"):
    stable_order.stable_order(jnp.ones(3), implementation="gpu")
  with pytest.raises(ValueError, match="axis"):
    stable_order.stable_order(jnp.float32(1.0))
