"""Mechanism reports: do the learned user codes recover the simulator's true user clusters?

On the simulator the trie of user clusters is known, so the paper's premise — the
residual codes group similar users — can be measured: the normalised mutual
information between each code prefix (levels 1..l) and the true cluster at the
same trie depth, plus codebook usage per level. :func:`learned_user_codes`
restores a finished GroupCE run's best weights and codebooks and encodes one row
per user.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from hgrank_jax.data.dataset import Dataset
from hgrank_jax.models import RVQ_COLLECTION
from hgrank_jax.train.checkpoint import CHECKPOINT_DIR


def normalized_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
  """NMI of two labelings ``[n]`` with the arithmetic-mean normaliser.

  NMI = I(A; B) / ((H(A) + H(B)) / 2); 1.0 when both labelings have a single class.
  """
  a = np.unique(np.asarray(a), return_inverse=True)[1]
  b = np.unique(np.asarray(b), return_inverse=True)[1]
  n = len(a)
  if n == 0:
    return float("nan")
  joint = np.zeros((a.max() + 1, b.max() + 1))
  np.add.at(joint, (a, b), 1.0)
  joint /= n
  pa, pb = joint.sum(1), joint.sum(0)
  entropy = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))
  ha, hb = entropy(pa), entropy(pb)
  if ha == 0 and hb == 0:
    return 1.0
  nonzero = joint > 0
  mutual = np.sum(joint[nonzero] * np.log(joint[nonzero] / np.outer(pa, pb)[nonzero]))
  return float(mutual / ((ha + hb) / 2))


def prefix_ids(codes: np.ndarray, level: int) -> np.ndarray:
  """Dense ids of the first ``level`` codes ``[n, L] -> [n]``."""
  return np.unique(np.asarray(codes)[:, :level], axis=0, return_inverse=True)[1].reshape(-1)


def _restore_best(workdir: pathlib.Path) -> tuple[Any, Any]:
  manager = ocp.CheckpointManager(pathlib.Path(workdir).resolve() / CHECKPOINT_DIR)
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  state = restored["state"]
  return state["best_params"], state["best_model_state"]


def learned_user_codes(workdir: str | pathlib.Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """``(user_ids [U], codes [U, L])`` from a finished GroupCE run's best weights.

  Each user is encoded from its first training row (the user tower reads only
  user fields, so any of the user's rows gives the same embedding).
  """
  from hgrank_jax.train.objectives import hgr_model_from_config  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  if config.objective.name != "hgr":
    raise ValueError(f"{workdir} is not a GroupCE (hgr) run: objective {config.objective.name!r}")
  model = hgr_model_from_config(config, dataset.spec)
  params, model_state = _restore_best(workdir)
  train = dataset.split("train")
  users, first = np.unique(train[dataset.spec.user_field], return_index=True)
  batch = {k: jnp.asarray(v[first]) for k, v in train.items() if k in dataset.spec.column_names}

  def encode(module, b):
    user_embedding = module.scorer.encode(b)[0]
    return module.quantizer(user_embedding, update=False).codes

  codes = model.apply({"params": params, RVQ_COLLECTION: model_state[RVQ_COLLECTION]}, batch,
                      method=encode)
  return users, np.asarray(jax.device_get(codes))


def code_cluster_report(codes: np.ndarray, true_clusters: np.ndarray,
                        codebook_size: int) -> dict[str, Any]:
  """Per level l: NMI(code prefix 1..l, true cluster at depth l), codes used, prefixes used.

  Args:
    codes: ``[U, L]`` learned codes.
    true_clusters: ``[U, D]`` true cluster id per trie depth (D may differ from L;
      level l is compared with depth min(l, D)).
    codebook_size: K.
  """
  levels = codes.shape[1]
  depth = true_clusters.shape[1]
  report = {"levels": []}
  for level in range(1, levels + 1):
    truth = true_clusters[:, min(level, depth) - 1]
    prefix = prefix_ids(codes, level)
    report["levels"].append({
        "level": level,
        "nmi": normalized_mutual_information(prefix, truth),
        "codes_used": int(len(np.unique(codes[:, level - 1]))),
        "codebook_size": int(codebook_size),
        "prefixes_used": int(prefix.max() + 1),
        "true_clusters": int(len(np.unique(truth))),
    })
  return report


def simulator_code_report(workdir: str | pathlib.Path, dataset: Dataset,
                          true_clusters: Mapping[int, np.ndarray] | np.ndarray) -> dict[str, Any]:
  """NMI and usage of a GroupCE run on the simulator; ``true_clusters[user] -> [D]``."""
  users, codes = learned_user_codes(workdir, dataset)
  config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  truth = np.asarray(true_clusters)[users]
  return code_cluster_report(codes, truth, int(config["hgr"]["codebook_size"]))
