"""Mechanism reports: NMI equals scikit-learn's; codes of a trained run are read back."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from hgrank_jax.experiments.mechanisms import (code_cluster_report, normalized_mutual_information,
                                               prefix_ids)


def test_nmi_equals_sklearn():
  rng = np.random.default_rng(0)
  for n, ka, kb in ((50, 3, 4), (500, 16, 4), (1000, 64, 64), (30, 1, 5)):
    a = rng.integers(0, ka, n) * 3 + 7  # arbitrary, non-dense ids
    b = rng.integers(0, kb, n)
    assert normalized_mutual_information(a, b) == pytest.approx(
        normalized_mutual_info_score(a, b), abs=1e-10)
  perfect = rng.integers(0, 5, 200)
  assert normalized_mutual_information(perfect, perfect * 11 + 2) == pytest.approx(1.0)


def test_prefix_report_on_codes_that_copy_the_truth():
  rng = np.random.default_rng(1)
  truth = np.stack([rng.integers(0, 4, 300)], 1)
  truth = np.concatenate([truth, truth * 4 + rng.integers(0, 4, (300, 1))], 1)  # depth-2 trie
  codes = np.stack([truth[:, 0], truth[:, 1] % 4], 1)   # level-2 code = child index
  report = code_cluster_report(codes, truth, codebook_size=8)
  assert [l["nmi"] for l in report["levels"]] == pytest.approx([1.0, 1.0])
  assert report["levels"][0]["codes_used"] == 4 and report["levels"][1]["prefixes_used"] == 16
  np.testing.assert_array_equal(prefix_ids(codes, 1), np.unique(codes[:, 0], return_inverse=True)[1])


@pytest.mark.slow
def test_learned_codes_of_a_trained_run_match_the_model_and_report_nmi(tmp_path):
  import pathlib
  import sys
  import jax.numpy as jnp
  from hgrank_jax.data import build_world, load_dataset
  from hgrank_jax.data.synthetic import config_for_view
  from hgrank_jax.experiments.mechanisms import _restore_best, learned_user_codes, simulator_code_report
  from hgrank_jax.models import RVQ_COLLECTION
  from hgrank_jax.train.loop import train_and_evaluate
  from hgrank_jax.train.objectives import hgr_model_from_config
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "configs"))
  import common  # pylint: disable=g-import-not-at-top
  config = common.apply_variants(common.base_config(), "runlocal,groupce")
  config.dataset, config.batch_size, config.eval_batch_size = "synthetic:tiny", 64, 128
  config.num_train_steps, config.eval_every_steps, config.log_every_steps = 4, 2, 2
  config.hgr.codebook_size, config.hgr.num_levels = 4, 2
  dataset = load_dataset("synthetic:tiny")
  train_and_evaluate(config, tmp_path, dataset=dataset)
  users, codes = learned_user_codes(tmp_path, dataset)
  assert codes.shape == (len(users), 2) and codes.min() >= 0 and codes.max() < 4
  # The same codes through the model's own forward pass on each user's first row.
  train = dataset.split("train")
  first = np.unique(train["user_id"], return_index=True)[1]
  batch = {k: jnp.asarray(v[first]) for k, v in train.items() if k in dataset.spec.column_names}
  params, model_state = _restore_best(tmp_path)
  model = hgr_model_from_config(config, dataset.spec)
  out = model.apply({"params": params, RVQ_COLLECTION: model_state[RVQ_COLLECTION]}, batch)
  np.testing.assert_array_equal(np.asarray(out.codes), codes)
  world = build_world(config_for_view("tiny", seed=0))
  report = simulator_code_report(tmp_path, dataset, world.user_cluster)
  assert len(report["levels"]) == 2
  assert all(0.0 <= level["nmi"] <= 1.0 for level in report["levels"])
