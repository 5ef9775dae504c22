"""Mechanism reports: the paper's claims about GroupCE, measured on finished runs.

On the simulator the trie of user clusters is known, so the paper's premise — the
residual codes group similar users — can be measured: the normalised mutual
information between each code prefix (levels 1..l) and the true cluster at the
same trie depth, plus codebook usage per level. :func:`learned_user_codes`
restores a finished GroupCE run's best weights and codebooks and encodes one row
per user; :func:`embedding_cluster_probe` asks whether the user embeddings the
codes quantise carry the cluster at all (a held-out nearest-centroid probe), which
separates "the quantiser missed the clusters" from "there was nothing to find".
:func:`harder_negatives_report` summarises the per-level negative gradients and
scores that GroupCE runs log during training (the paper's "deeper levels give
harder negatives").
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
from hgrank_jax.data.sim import synthetic
from hgrank_jax.train.checkpoint import CHECKPOINT_DIR
from hgrank_jax.train.evaluation import classification_metrics
from hgrank_jax.train.objectives import hgr_model_from_config, scorer_from_config
from hgrank_jax.train.writers import read_metrics


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


def restore_best(workdir: str | pathlib.Path) -> tuple[Any, Any]:
  """(best_params, best_model_state) of the newest checkpoint of a ``launch.train`` run."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir).resolve() / CHECKPOINT_DIR)
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()))
  manager.close()
  state = restored["state"]
  return state["best_params"], state["best_model_state"]


def _first_row_per_user(dataset: Dataset):
  train = dataset.split("train")
  users, first = np.unique(train[dataset.spec.user_field], return_index=True)
  batch = {k: jnp.asarray(v[first]) for k, v in train.items() if k in dataset.spec.column_names}
  return users, batch


def _run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((pathlib.Path(workdir) / "config.json").read_text()))


def learned_user_codes(workdir: str | pathlib.Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """``(user_ids [U], codes [U, L])`` from a finished GroupCE run's best weights.

  Each user is encoded from its first training row (the user tower reads only
  user fields, so any of the user's rows gives the same embedding).
  """
  workdir = pathlib.Path(workdir)
  config = _run_config(workdir)
  if config.objective.name != "hgr":
    raise ValueError(f"{workdir} is not a GroupCE (hgr) run: objective {config.objective.name!r}")
  model = hgr_model_from_config(config, dataset.spec)
  params, model_state = restore_best(workdir)
  users, batch = _first_row_per_user(dataset)

  def encode(module, b):
    user_embedding = module.scorer.encode(b)[0]
    return module.quantizer(user_embedding, update=False).codes

  codes = model.apply({"params": params, RVQ_COLLECTION: model_state[RVQ_COLLECTION]}, batch,
                      method=encode)
  return users, np.asarray(jax.device_get(codes))


def encode_users(config: ml_collections.ConfigDict, spec, params, model_state,
                 batch) -> np.ndarray:
  """``e_u [B, d]`` float32 of the rows ``batch`` (spec columns) under a run's weights.

  ``config`` is the run's config and ``params``, ``model_state`` its weights
  (:func:`restore_best`). The user tower reads only user fields, so the item
  and context fields of ``batch`` may be anything valid. Works for GroupCE
  runs and for plain scorers (pointwise objectives).
  """
  if config.objective.name == "hgr":
    model = hgr_model_from_config(config, spec)
    embed = lambda m, b: m.scorer.encode(b)[0]
    variables = {"params": params, **model_state}
  else:
    model = scorer_from_config(config, spec)
    embed = lambda m, b: m.encode(b)[0]
    variables = {"params": params}
  embeddings = model.apply(variables, batch, method=embed)
  return np.asarray(jax.device_get(embeddings), np.float32)


def learned_user_embeddings(workdir: str | pathlib.Path,
                            dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """``(user_ids [U], e_u [U, d])`` float32 from any finished run's best weights.

  Works for GroupCE runs and for plain scorers (pointwise objectives).
  """
  users, batch = _first_row_per_user(dataset)
  params, model_state = restore_best(workdir)
  return users, encode_users(_run_config(pathlib.Path(workdir)), dataset.spec, params,
                             model_state, batch)


def embedding_cluster_probe(embeddings: np.ndarray, clusters: np.ndarray, *, folds: int = 2,
                            seed: int = 0) -> dict[str, float]:
  """Held-out nearest-centroid accuracy of predicting ``clusters`` from ``embeddings``.

  Users are split into ``folds`` random folds; each fold is classified by the
  nearest class centroid (Euclidean, on standardised coordinates) of the other
  folds. Chance is the majority-class share. An accuracy near chance says the
  embeddings hold no linearly separable trace of the clusters, so no quantiser
  of them can recover the clusters either.

  Args:
    embeddings: ``[U, d]`` float.
    clusters: ``[U]`` int true cluster per user.

  Returns:
    ``{"accuracy", "chance", "num_clusters"}``.
  """
  x = np.asarray(embeddings, np.float64)
  y = np.asarray(clusters)
  if x.ndim != 2 or y.shape != (x.shape[0],):
    raise ValueError(f"embedding_cluster_probe: expected [U, d] and [U], got {x.shape}, {y.shape}")
  x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
  fold = np.random.default_rng(seed).permutation(len(y)) % folds
  correct = 0
  for f in range(folds):
    train, test = fold != f, fold == f
    labels = np.unique(y[train])
    centroids = np.stack([x[train & (y == c)].mean(0) for c in labels])
    distance = ((x[test][:, None, :] - centroids[None]) ** 2).sum(-1)
    correct += int((labels[distance.argmin(1)] == y[test]).sum())
  return {"accuracy": correct / len(y), "chance": float(np.bincount(y).max() / len(y)),
          "num_clusters": int(len(np.unique(y)))}



def simulator_oracle_metrics(view: str, seed: int = 0) -> dict[str, dict[str, float]]:
  """Test metrics of the simulator's true probabilities: the ceiling a scorer aims at.

  ``relevance`` is the true click probability once an item is examined (what a
  position-debiased scorer estimates); ``click_prob`` also includes the position
  bias of the logged slot. Both are scored against the logged test clicks.
  """
  logs = synthetic.make_dataset(synthetic.config_for_view(view, seed=seed))
  test = logs.dataset.split("test")
  spec = logs.dataset.spec
  out = {}
  for name in ("relevance", "click_prob"):
    p = np.clip(np.asarray(logs.truth["test"][name], np.float64), 1e-7, 1 - 1e-7)
    out[name] = classification_metrics(np.log(p / (1 - p)), test[spec.label], test[spec.user_field])
  return out


HARDNESS_STATS = ("neg_grad", "neg_grad_per_group", "neg_logit", "pos_logit")


def harder_negatives_report(workdirs) -> dict[str, Any]:
  """Per-level means of the ``hard_*`` metrics GroupCE runs report.

  Runs report them at every evaluation, on the validation batches
  (``valid_hard_*`` in the eval records); runs made before the report moved to
  evaluation logged them on training batches (``hard_*`` in the train records),
  which are read when a run has no eval ones. Each record is already a mean
  (over the split's batches, or over a logging window); the report averages
  every record of every run. Levels and statistics are those of
  :func:`hgrank_jax.losses.negative_hardness_per_level`.

  Returns:
    ``{"runs": n, "records": m, "levels": [{"level", <stat>: mean, "logit_gap":
    pos_logit - neg_logit}, ...]}``; ``levels`` is empty when no run reported them.
  """
  workdirs = list(workdirs)
  records = []
  for workdir in workdirs:
    evaluated = [{k[len("valid_"):]: v for k, v in r.items() if k.startswith("valid_hard_")}
                 for r in read_metrics(workdir, "eval")]
    evaluated = [r for r in evaluated if r]
    records += evaluated or [r for r in read_metrics(workdir, "train")
                             if any(k.startswith("hard_") for k in r)]
  levels = []
  level = 1
  while records and f"hard_neg_grad_l{level}" in records[0]:
    entry = {"level": level}
    for stat in HARDNESS_STATS:
      values = np.array([r[f"hard_{stat}_l{level}"] for r in records], np.float64)
      entry[stat] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    entry["logit_gap"] = entry["pos_logit"] - entry["neg_logit"]
    levels.append(entry)
    level += 1
  return {"runs": len(workdirs), "records": len(records), "levels": levels}


def harder_negatives_markdown(report: Mapping[str, Any], title: str) -> str:
  """The report of :func:`harder_negatives_report` as a markdown section."""
  lines = [f"# {title}", "",
           "Measured on the validation batches at every evaluation of the GroupCE runs "
           "(not used for training; runs before that logged training batches); "
           f"means over {report['records']} records of {report['runs']} runs. "
           "|dL_l/ds| is the gradient of level l's ListCE on a negative's logit; "
           "\u00d7 groups multiplies it by the number of occupied groups (the push per group); "
           "logits are those of negatives and positives sharing a level-l group.", "",
           "| level | mean abs dL_l/ds on negatives | \u00d7 groups | negative logit | "
           "positive logit | gap |", "|---|---|---|---|---|---|"]
  for entry in report["levels"]:
    lines.append(f"| {entry['level']} | {entry['neg_grad']:.3g} | "
                 f"{entry['neg_grad_per_group']:.4f} | {entry['neg_logit']:.4f} | "
                 f"{entry['pos_logit']:.4f} | {entry['logit_gap']:.4f} |")
  if not report["levels"]:
    lines.append("| - | not logged by these runs | | | | |")
  return "\n".join(lines) + "\n"


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
