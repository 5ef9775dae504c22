"""Streaming pipeline over 8 fake devices: every unit once per epoch, exact resume, lists."""

import grain
import jax
import numpy as np
import pytest

from hgrank_jax.data import ArrayBatcher
from hgrank_jax.data.official import tfds_builders
from hgrank_jax.data.pipeline import (BlockSource, StreamingBatcher, group_into_lists,
                                      lists_from_rows, shard_range, streaming_eval_batches)
from hgrank_jax.parallel import data_mesh
from tests.data.test_kuairand_builder import write_kuairand


def _block_source(group_sizes_per_block, seed=0):
  """Blocks of whole users: ``row`` numbers rows 0..n-1, ``user`` names the group."""
  rng = np.random.default_rng(seed)
  blocks, row, user = [], 0, 0
  for sizes in group_sizes_per_block:
    users = np.repeat(np.arange(user, user + len(sizes)), sizes).astype(np.int32)
    n = int(sum(sizes))
    blocks.append({"row": np.arange(row, row + n, dtype=np.int32), "user": users,
                   "x": rng.normal(size=(n, 2)).astype(np.float32)})
    row, user = row + n, user + len(sizes)
  return BlockSource(blocks, [int(sum(s)) for s in group_sizes_per_block], group_sizes_per_block)


def _random_layout(num_blocks, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 9, size=rng.integers(2, 7)).tolist() for _ in range(num_blocks)]


def test_shard_range_matches_grain_even_split():
  from grain._src.core.sharding import even_split
  for n in (0, 1, 7, 10, 13):
    for count in (1, 2, 3, 4):
      for index in range(count):
        options = grain.sharding.ShardOptions(index, count)
        assert shard_range(n, options) == even_split(n, options)


def test_every_row_exactly_once_per_epoch_on_eight_devices():
  source = _block_source(_random_layout(23))
  n = int(source.rows_per_block.sum())
  batcher = StreamingBatcher(source, 32, seed=4, num_epochs=3, mesh=data_mesh(), window_blocks=4)
  assert batcher.steps_per_epoch == -(-n // 32) and batcher.num_rows == n
  per_epoch = [[] for _ in range(3)]
  all_x = np.concatenate([source.read(i)["x"] for i in range(len(source))])
  for step, batch in enumerate(batcher):
    assert batch["row"].shape == (32,) and batch["x"].shape == (32, 2)
    assert batch["mask"].shape == (32,) and batch["mask"].dtype == bool
    assert batch["row"].sharding.shard_shape(batch["row"].shape) == (4,)
    assert len(batch["row"].sharding.device_set) == 8
    rows, mask = np.asarray(batch["row"]), np.asarray(batch["mask"])
    np.testing.assert_array_equal(np.asarray(batch["x"])[mask], all_x[rows[mask]])
    per_epoch[step // batcher.steps_per_epoch].extend(rows[mask].tolist())
  assert step + 1 == 3 * batcher.steps_per_epoch
  for rows in per_epoch:
    assert sorted(rows) == list(range(n))
  assert per_epoch[0] != per_epoch[1]  # reshuffled each epoch
  assert per_epoch[0] != sorted(per_epoch[0])


def test_processes_read_disjoint_shards_with_equal_steps():
  source = _block_source(_random_layout(10))
  n = int(source.rows_per_block.sum())
  seen, steps = [], set()
  for index in range(3):
    batcher = StreamingBatcher(source, 24, seed=2, num_epochs=1,
                               shard=grain.sharding.ShardOptions(index, 3))
    assert batcher.local_batch_size == 8
    batches = list(batcher)
    steps.add(len(batches))
    start, end = shard_range(10, grain.sharding.ShardOptions(index, 3))
    own = set(np.concatenate([source.read(i)["row"] for i in range(start, end)]).tolist())
    rows = [r for b in batches for r in b["row"][b["mask"]].tolist()]
    assert set(rows) == own and len(rows) == len(own)  # only its own blocks, each row once
    seen.extend(rows)
  assert len(steps) == 1  # the same number of steps everywhere
  assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("list_size", [None, 3])
def test_resume_from_saved_state_is_exact(list_size):
  source = _block_source(_random_layout(9))
  make = lambda: StreamingBatcher(source, 8, seed=7, num_epochs=3, window_blocks=2,
                                  list_size=list_size)
  reference = list(make())
  for stop in (0, 5, make().steps_per_epoch, make().steps_per_epoch + 3):
    first = make()
    for _ in range(stop):
      next(first)
    state = first.get_state()
    resumed = make()
    resumed.set_state(dict(state))
    rest = list(resumed)
    assert len(rest) == len(reference) - stop
    for got, want in zip(rest, reference[stop:]):
      assert sorted(got) == sorted(want)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_state_mismatch_is_refused():
  source = _block_source(_random_layout(4))
  state = StreamingBatcher(source, 8, seed=1).get_state()
  with pytest.raises(ValueError, match="saved with seed=1, but this batcher has seed=2"):
    StreamingBatcher(source, 8, seed=2).set_state(state)
  with pytest.raises(ValueError, match="saved with list_size=0, but this batcher has list_size=4"):
    StreamingBatcher(source, 8, seed=1, list_size=4).set_state(state)


def test_eval_order_and_padding_match_the_in_memory_batcher():
  source = _block_source(_random_layout(5))
  columns = {k: np.concatenate([source.read(i)[k] for i in range(len(source))])
             for k in ("row", "user", "x")}
  streamed = list(streaming_eval_batches(source, 16, mesh=data_mesh()))
  in_memory = list(ArrayBatcher(columns, 16, shuffle=False, num_epochs=1))
  assert len(streamed) == len(in_memory)
  for got, want in zip(streamed, in_memory):
    np.testing.assert_array_equal(np.asarray(got["mask"]), want["mask"])
    mask = want["mask"]
    for key in ("row", "user", "x"):
      np.testing.assert_array_equal(np.asarray(got[key])[mask], want[key][mask])


def test_group_into_lists_packs_and_splits_long_groups():
  columns = {"v": np.arange(7, dtype=np.int32) + 10, "w": np.arange(14.0).reshape(7, 2)}
  lists = group_into_lists(columns, [2, 5], 3)
  assert lists["v"].tolist() == [[10, 11, 0], [12, 13, 14], [15, 16, 0]]
  assert lists["where"].tolist() == [[True, True, False], [True, True, True], [True, True, False]]
  assert lists["w"].shape == (3, 3, 2) and lists["w"][1, 2].tolist() == [8.0, 9.0]
  in_memory = lists_from_rows({"u": np.asarray([5, 1, 5, 1]), "t": np.asarray([4, 3, 2, 1])},
                              "u", 4, order_field="t")
  assert in_memory["u"].tolist() == [[1, 1, 0, 0], [5, 5, 0, 0]]
  assert in_memory["t"].tolist() == [[1, 3, 0, 0], [2, 4, 0, 0]]


def test_list_batches_hold_each_user_once_per_epoch_on_eight_devices():
  layout = _random_layout(12)
  source = _block_source(layout)
  list_size = 4
  batcher = StreamingBatcher(source, 16, seed=3, num_epochs=2, mesh=data_mesh(),
                             window_blocks=3, list_size=list_size)
  expected_lists = sum(-(-s // list_size) for sizes in layout for s in sizes)
  assert batcher.num_rows == expected_lists
  n = int(source.rows_per_block.sum())
  for epoch in range(2):
    rows = []
    for _ in range(batcher.steps_per_epoch):
      batch = next(batcher)
      assert batch["row"].shape == (16, list_size) and batch["where"].shape == (16, list_size)
      assert batch["x"].shape == (16, list_size, 2)
      where, mask = np.asarray(batch["where"]), np.asarray(batch["mask"])
      assert not where[~mask].any() and where[mask, 0].all()
      for row_list, valid in zip(np.asarray(batch["row"])[mask], where[mask]):
        values = row_list[valid]
        assert np.all(np.diff(values) == 1)  # consecutive rows of one user, in order
        assert valid.tolist() == sorted(valid.tolist(), reverse=True)  # padding at the end
      users = np.asarray(batch["user"])
      for user_list, valid in zip(users[mask], where[mask]):
        assert len(set(user_list[valid].tolist())) == 1
      rows.extend(np.asarray(batch["row"])[where].tolist())
    assert sorted(rows) == list(range(n)), epoch
  assert batcher.exhausted


@pytest.fixture(scope="module")
def prepared_kuairand(tmp_path_factory):
  manual = tmp_path_factory.mktemp("manual")
  write_kuairand(manual, rows_per_file=(900, 600, 300), seed=5)
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = tfds_builders.prepare("kuairand", "pure", manual_dir=manual, data_dir=data_dir,
                                  block_rows=128)
  return builder, tfds_builders.load_prepared("kuairand", "pure", data_dir=data_dir)


def test_tfds_blocks_stream_every_training_row_once_on_eight_devices(prepared_kuairand):
  builder, dataset = prepared_kuairand
  names = ["user_id", "video_id", "category", "hour", "tab", "is_click", "video_duration"]
  source = BlockSource.from_tfds(builder, "train", columns=names)
  batcher = StreamingBatcher(source, 64, seed=11, num_epochs=1, mesh=data_mesh(),
                             window_blocks=2)
  got = []
  for batch in batcher:
    mask = np.asarray(batch["mask"])
    got.extend(zip(*(np.asarray(batch[k])[mask].tolist() for k in names)))
  train = dataset.split("train")
  want = list(zip(*(train[k].tolist() for k in names)))
  assert len(got) == len(want) and sorted(got) == sorted(want)


def test_tfds_list_batches_group_one_user_in_time_order(prepared_kuairand):
  builder, dataset = prepared_kuairand
  source = BlockSource.from_tfds(builder, "test", columns=["user_id", "time_ms"])
  batcher = streaming_eval_batches(source, 8, list_size=64,
                                   shard=grain.sharding.ShardOptions(0, 1))
  times = []
  for batch in batcher:
    for users, stamps, valid in zip(batch["user_id"][batch["mask"]],
                                    batch["time_ms"][batch["mask"]],
                                    batch["where"][batch["mask"]]):
      assert len(set(users[valid].tolist())) == 1
      assert np.all(np.diff(stamps[valid]) > 0)
      times.extend(stamps[valid].tolist())
  assert sorted(times) == sorted(dataset.split("test")["time_ms"].tolist())
  assert jax.device_count() == 8


def test_tfds_resume_on_eight_devices_matches_an_uninterrupted_run(prepared_kuairand):
  builder, _ = prepared_kuairand
  source = BlockSource.from_tfds(builder, "train", columns=["user_id", "video_id", "is_click"])
  make = lambda: StreamingBatcher(source, 32, seed=9, num_epochs=2, mesh=data_mesh(),
                                  window_blocks=3)
  reference = [{k: np.asarray(v) for k, v in b.items()} for b in make()]
  interrupted = make()
  for _ in range(interrupted.steps_per_epoch + 2):
    next(interrupted)
  resumed = make()
  resumed.set_state(interrupted.get_state())
  rest = [{k: np.asarray(v) for k, v in b.items()} for b in resumed]
  assert len(rest) == len(reference) - interrupted.steps_per_epoch - 2
  for got, want in zip(rest, reference[interrupted.steps_per_epoch + 2:]):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_block_dataset_writer_round_trips_chunks_of_any_size(tmp_path):
  from hgrank_jax.data.formats.block_dataset import BlockDatasetWriter, open_block_dataset
  rng = np.random.default_rng(0)
  n = 1000
  columns = {"row": np.arange(n, dtype=np.int64), "x": rng.normal(size=(n, 3)).astype(np.float32)}
  writer = BlockDatasetWriter(tmp_path / "d", block_rows=64, blocks_per_shard=3,
                              info={"note": "test"})
  cuts = [0, 1, 1, 70, 200, 203, 640, n]  # empty, tiny and multi-block chunks
  for a, b in zip(cuts, cuts[1:]):
    writer.write("train", {k: v[a:b] for k, v in columns.items()})
    assert all(len(p["row"]) < 64 for p in writer._buffers["train"])  # bounded buffer
  writer.write("valid", {k: v[:5] for k, v in columns.items()})
  metadata = writer.close()
  assert metadata["splits"]["train"]["rows_per_block"] == [64] * 15 + [40]
  assert len(metadata["splits"]["train"]["files"]) == 6  # ceil(16 blocks / 3)
  data = open_block_dataset(tmp_path / "d")
  assert data.num_rows("train") == n and data.num_rows("valid") == 5
  assert data.metadata["info"] == {"note": "test"} and data.spec is None
  loaded = data.load_split("train")
  for key in columns:
    np.testing.assert_array_equal(loaded[key], columns[key])
  # A streamed epoch sees every row once.
  batches = list(StreamingBatcher(data.source("train"), 48, seed=1, num_epochs=1, window_blocks=2,
                                  mesh=data_mesh()))
  rows = np.concatenate([np.asarray(b["row"])[np.asarray(b["mask"])] for b in batches])
  assert sorted(rows.tolist()) == list(range(n))
  with pytest.raises(FileExistsError, match="already holds a block dataset"):
    BlockDatasetWriter(tmp_path / "d")


def test_block_dataset_errors_are_clear(tmp_path):
  from hgrank_jax.data.formats.block_dataset import BlockDatasetWriter, open_block_dataset
  writer = BlockDatasetWriter(tmp_path / "d", block_rows=4)
  writer.write("train", {"a": np.zeros(3, np.int32)})
  with pytest.raises(ValueError, match="columns or dtypes changed"):
    writer.write("train", {"a": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="differ in length"):
    writer.write("train", {"a": np.zeros(3, np.int32), "b": np.zeros(2, np.int32)})
  # Not closed: no blocks.json, so it is not mistaken for a complete dataset.
  with pytest.raises(FileNotFoundError, match="did not finish"):
    open_block_dataset(tmp_path / "d")
  writer.close()
  with pytest.raises(KeyError, match="no split 'test'"):
    open_block_dataset(tmp_path / "d").source("test")
