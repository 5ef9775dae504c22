"""Training from array_record blocks (config.data_source = "streaming"): the same resume
semantics as in-memory data, and evaluation over every valid/test row."""

import importlib.util
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hgrank_jax.data.sim import synthetic
from hgrank_jax.data.formats.block_dataset import open_block_dataset
from hgrank_jax.train.evaluation import classification_metrics
from hgrank_jax.train.loop import train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _simulator_config(data_path, **overrides):
  spec = importlib.util.spec_from_file_location("simulator_config", ROOT / "configs" / "simulator.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("runlocal")
  config.dataset = "synthetic:tiny"  # recorded only; the rows come from data_path
  config.data_source = "streaming"
  config.data_path = str(data_path)
  config.stream_window_blocks = 2
  config.num_train_steps = 24
  config.eval_every_steps = 8
  config.log_every_steps = 4
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
  path = tmp_path_factory.mktemp("blocks") / "sim"
  sim = synthetic.config_for_view("tiny", seed=3, num_requests=600)
  synthetic.write_blocks(sim, path, block_rows=256, blocks_per_shard=4)
  return path


def _state(workdir):
  manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  return restored["state"], dict(restored["loop"])


def test_write_blocks_splits_every_row_once(blocks):
  data = open_block_dataset(blocks)
  sim = synthetic.config_for_view("tiny", seed=3, num_requests=600)
  reference = synthetic.concat_log_chunks(synthetic.iter_log_chunks(sim)).columns
  rows = {s: data.load_split(s) for s in ("train", "valid", "test")}
  assert sum(len(r["click"]) for r in rows.values()) == len(reference["click"]) == 6000
  # Every (request, position) once, and a request's rows stay in one split.
  keys = np.concatenate([r["request_id"] * 100 + r["position"] for r in rows.values()])
  np.testing.assert_array_equal(np.sort(keys), np.sort(reference["request_id"] * 100
                                                       + reference["position"]))
  by_split = [set(r["request_id"].tolist()) for r in rows.values()]
  assert not (by_split[0] & by_split[1] or by_split[0] & by_split[2] or by_split[1] & by_split[2])
  assert 0.6 < len(rows["train"]["click"]) / 6000 < 0.8
  assert data.spec.label == "click" and data.metadata["splits"]["train"]["files"][0].endswith(
      ".array_record")


def test_streaming_resume_equals_uninterrupted(tmp_path, blocks):
  config = _simulator_config(blocks)
  full = train_and_evaluate(config, tmp_path / "full")
  part = tmp_path / "part"
  # 11: mid-epoch (an epoch of ~4200 train rows is 17 steps of 256), between evaluations;
  # 19: in the second epoch.
  assert train_and_evaluate(config, part, stop_after_step=11) == {"interrupted_at": 11}
  assert _state(part)[1]["data"]["step_in_epoch"] == 11
  assert train_and_evaluate(config, part, stop_after_step=19) == {"interrupted_at": 19}
  assert _state(part)[1]["data"]["epoch"] == 1
  resumed = train_and_evaluate(config, part)
  assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
  a, loop_a = _state(tmp_path / "full")
  b, loop_b = _state(part)
  assert loop_a == loop_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Evaluation covered every valid and test row, in their stored order.
  data = open_block_dataset(blocks)
  predictions = np.load(part / "predictions.npz")
  for split in ("valid", "test"):
    columns = data.load_split(split)
    assert predictions[split].shape == (data.num_rows(split),)
    expected = classification_metrics(predictions[split], columns["click"], columns["user_id"])
    assert resumed[split] == pytest.approx(expected, abs=1e-9)


def test_streaming_without_data_path_is_refused(tmp_path):
  config = _simulator_config("")
  with pytest.raises(ValueError, match="needs config.data_path"):
    train_and_evaluate(config, tmp_path)
  config = _simulator_config(tmp_path / "nothing_here", dataset="synthetic:tiny")
  with pytest.raises(FileNotFoundError, match="holds no block dataset"):
    train_and_evaluate(config, tmp_path / "w")


def test_streaming_with_steps_per_dispatch_matches_one_step(tmp_path, blocks):
  # The streamed batches of a dispatch are stacked on the devices; dispatches of 3
  # steps stop at every log (4) and evaluation (8).
  one = train_and_evaluate(_simulator_config(blocks, num_train_steps=12), tmp_path / "one")
  several = train_and_evaluate(_simulator_config(blocks, num_train_steps=12,
                                                 steps_per_dispatch=3), tmp_path / "several")
  a, loop_a = _state(tmp_path / "one")
  b, loop_b = _state(tmp_path / "several")
  assert loop_a == loop_b
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
  for split in ("valid", "test"):
    assert several[split] == pytest.approx(one[split], abs=1e-6)
