"""Mechanism reports: NMI equals scikit-learn's; codes of a trained run are read back."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from hgrank_jax.experiments.mechanisms import (code_cluster_report, embedding_cluster_probe,
                                               harder_negatives_report,
                                               normalized_mutual_information, prefix_ids)


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
  import jax.numpy as jnp
  from configs import common
  from hgrank_jax.data import build_world, load_dataset
  from hgrank_jax.data.sim.synthetic import config_for_view
  from hgrank_jax.experiments.mechanisms import restore_best, learned_user_codes, simulator_code_report
  from hgrank_jax.models import RVQ_COLLECTION
  from hgrank_jax.train.loop import train_and_evaluate
  from hgrank_jax.train.objectives import hgr_model_from_config
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
  params, model_state = restore_best(tmp_path)
  model = hgr_model_from_config(config, dataset.spec)
  out = model.apply({"params": params, RVQ_COLLECTION: model_state[RVQ_COLLECTION]}, batch)
  np.testing.assert_array_equal(np.asarray(out.codes), codes)
  world = build_world(config_for_view("tiny", seed=0))
  report = simulator_code_report(tmp_path, dataset, world.user_cluster)
  assert len(report["levels"]) == 2
  assert all(0.0 <= level["nmi"] <= 1.0 for level in report["levels"])


def test_embedding_probe_separates_clustered_from_random_embeddings():
  rng = np.random.default_rng(3)
  clusters = rng.integers(0, 4, 400)
  centres = rng.normal(size=(4, 8)) * 3
  clustered = centres[clusters] + rng.normal(size=(400, 8))
  noise = rng.normal(size=(400, 8))
  separable = embedding_cluster_probe(clustered, clusters)
  blind = embedding_cluster_probe(noise, clusters)
  chance = np.bincount(clusters).max() / 400
  assert separable["chance"] == pytest.approx(chance) and separable["num_clusters"] == 4
  assert separable["accuracy"] > 0.95
  assert abs(blind["accuracy"] - 0.25) < 0.08  # 4 balanced clusters: 1/4 expected


def test_harder_negatives_report_averages_logged_records(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  values = {"neg_grad": [[1e-4, 2e-4], [3e-4, 4e-4]], "neg_grad_per_group": [[0.1, 0.2], [0.3, 0.5]],
            "neg_logit": [[-1.0, -0.5], [-2.0, -1.5]], "pos_logit": [[0.0, 0.5], [1.0, 1.5]]}
  for run in range(2):
    lines = [{"kind": "eval", "step": 5, "valid_gauc": 0.6}]
    for record in range(2):
      entry = {"kind": "train", "step": record + 1, "loss": 1.0}
      for stat, per_run in values.items():
        for level in range(2):
          entry[f"hard_{stat}_l{level + 1}"] = per_run[record][level] + run
      lines.append(entry)
    (tmp_path / str(run)).mkdir()
    (tmp_path / str(run) / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
  report = harder_negatives_report([tmp_path / "0", tmp_path / "1"])
  assert report["runs"] == 2 and report["records"] == 4 and len(report["levels"]) == 2
  for level in range(2):
    for stat, per_run in values.items():
      want = np.mean([per_run[r][level] + run for run in range(2) for r in range(2)])
      assert report["levels"][level][stat] == pytest.approx(want)
    gap = report["levels"][level]["pos_logit"] - report["levels"][level]["neg_logit"]
    assert report["levels"][level]["logit_gap"] == pytest.approx(gap)
  assert harder_negatives_report([tmp_path / "missing"])["levels"] == []


def test_simulator_oracle_auc_equals_sklearn_on_true_probabilities():
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  from hgrank_jax.data.sim import synthetic  # pylint: disable=g-import-not-at-top
  from hgrank_jax.experiments.mechanisms import simulator_oracle_metrics  # pylint: disable=g-import-not-at-top
  oracle = simulator_oracle_metrics("tiny", seed=0)
  logs = synthetic.make_dataset(synthetic.config_for_view("tiny", seed=0))
  clicks = logs.dataset.split("test")["click"]
  for name in ("relevance", "click_prob"):
    want = roc_auc_score(clicks, logs.truth["test"][name])
    assert oracle[name]["auc"] == pytest.approx(want, abs=1e-6)
