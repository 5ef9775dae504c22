"""ArrayBatcher over 8 fake CPU devices: every row once per epoch, exact resume."""

import jax
import numpy as np
import pytest

from hgrank_jax.data import ArrayBatcher, eval_batches
from hgrank_jax.parallel import data_mesh


def _columns(n=1003):
  rng = np.random.default_rng(0)
  return {"row": np.arange(n, dtype=np.int32), "x": rng.normal(size=(n, 3)).astype(np.float32)}


def test_eight_devices_are_present():
  assert jax.device_count() == 8


def test_every_row_exactly_once_per_epoch_on_eight_devices():
  mesh = data_mesh()
  columns = _columns()
  batcher = ArrayBatcher(columns, 64, shuffle=True, seed=5, num_epochs=3, mesh=mesh)
  assert batcher.steps_per_epoch == 16  # ceil(1003 / 64)
  seen = {0: [], 1: [], 2: []}
  for step, batch in enumerate(batcher):
    assert batch["row"].shape == (64,) and batch["x"].shape == (64, 3)
    assert len(batch["row"].sharding.device_set) == 8
    assert batch["row"].sharding.shard_shape(batch["row"].shape) == (8,)
    rows, mask = np.asarray(batch["row"]), np.asarray(batch["mask"])
    np.testing.assert_array_equal(np.asarray(batch["x"]), columns["x"][rows])
    seen[step // 16].extend(rows[mask].tolist())
  assert step == 47
  orders = []
  for epoch_rows in seen.values():
    assert sorted(epoch_rows) == list(range(1003))
    orders.append(epoch_rows)
  assert orders[0] != orders[1]  # a new permutation each epoch


def test_resume_from_saved_state_gives_the_same_stream():
  columns = _columns(500)
  reference = [b["row"].copy() for b in ArrayBatcher(columns, 32, seed=1, num_epochs=3)]
  first = ArrayBatcher(columns, 32, seed=1, num_epochs=3)
  stream = [next(first)["row"].copy() for _ in range(23)]  # stop mid second epoch
  state = first.get_state()
  assert state["epoch"] == 1 and state["step_in_epoch"] == 7
  resumed = ArrayBatcher(columns, 32, seed=1, num_epochs=3)
  resumed.set_state(state)
  stream += [b["row"].copy() for b in resumed]
  assert len(stream) == len(reference)
  for a, b in zip(stream, reference):
    np.testing.assert_array_equal(a, b)


def test_eval_batches_pad_and_never_repeat():
  columns = _columns(100)
  batches = list(eval_batches(columns, 24, mesh=data_mesh()))
  assert len(batches) == 5
  rows = np.concatenate([np.asarray(b["row"])[np.asarray(b["mask"])] for b in batches])
  np.testing.assert_array_equal(rows, np.arange(100))
  assert np.asarray(batches[-1]["mask"]).sum() == 4


def test_bad_input_is_named():
  columns = _columns(10)
  with pytest.raises(ValueError, match="not divisible by the number of devices 8"):
    ArrayBatcher(columns, 12, mesh=data_mesh())
  with pytest.raises(ValueError, match="differ in length"):
    ArrayBatcher({"a": np.zeros(3), "b": np.zeros(4)}, 2)
  with pytest.raises(ValueError, match="reserved"):
    ArrayBatcher({"mask": np.zeros(3)}, 2)
  batcher = ArrayBatcher(columns, 4, seed=0)
  with pytest.raises(ValueError, match="global_batch_size=4"):
    ArrayBatcher(columns, 5, seed=0).set_state(batcher.get_state())


class _FakeSharding:
  """What one process of a multi-process job sees: the indices its devices hold."""

  def __init__(self, ranges):
    self.ranges = ranges

  def addressable_devices_indices_map(self, shape):
    return {device: (slice(a, b),) for device, (a, b) in enumerate(self.ranges)}


def test_local_batch_slice_is_the_rows_of_this_process():
  from hgrank_jax.parallel.sharding import batch_sharding, local_batch_slice
  assert local_batch_slice(batch_sharding(data_mesh()), 64) == slice(0, 64)  # one process
  # Process 1 of 2, 4 devices each, global batch 64: rows 32..63, in any device order.
  assert local_batch_slice(_FakeSharding([(48, 56), (32, 40), (56, 64), (40, 48)]), 64) == \
      slice(32, 64)
  with pytest.raises(ValueError, match="non-contiguous"):
    local_batch_slice(_FakeSharding([(0, 8), (16, 24)]), 64)
