"""Where the Layer 3 comparison's request lists come from, and how they are split.

``config.dataset`` picks the lists. "simulator": the simulator's requests,
split by count, scored against the true click probabilities (true utility).
"kuairand": official KuaiRand logs (``config.kuairand.manual_dir``), one list
per user and day (:mod:`hgrank_jax.data.official.kuairand_lists`), split by date, scored
against the observed labels ("label utility": their DCG with diminishing
returns for repeated categories); the category and business counts come from
the data. On KuaiRand a quota can be impossible for a list (too few
categories), so the constrained methods fill such lists best effort and the
table reports the share of test lists where the quota can be met.
With ``config.scorer_workdir`` set, simulator lists come from that
``launch.train`` run's world, sorted by its logits (:mod:`.layer1_scores`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hgrank_jax.data import SimulatorConfig, make_request_lists
from hgrank_jax.data.official import kuairand_lists
from hgrank_jax.data.sim.lists import RequestLists
from hgrank_jax.experiments import layer1_scores


def _subset(lists, rows):
  """The requests ``rows`` (an index array) of ``lists``."""
  shared = ("position_bias", "repeat_decay")
  return RequestLists(inputs={name: value[rows] for name, value in lists.inputs.items()},
                      truth={name: value if name in shared else value[rows]
                             for name, value in lists.truth.items()})


def load_lists(config, log=print):
  """The requests of ``config.dataset`` and their split.

  Returns:
    (lists, (train, valid, test) slices, config, info): the returned config is
    a copy with ``num_categories`` and ``num_business`` set from the data;
    ``info`` describes the lists (names of the utility and NDCG columns,
    counts, dates).
  """
  config = config.copy_and_resolve_references()
  dataset = config.get("dataset", "simulator")
  if dataset == "simulator":
    scorer = config.get("scorer_workdir", "")
    sizes = dict(num_list_requests=config.num_lists, list_candidates=config.num_candidates)
    if scorer:
      # The lists come from the world the scorer learned, sorted by its logits.
      sim = dataclasses.replace(layer1_scores.run_world(scorer)[1], **sizes)
      lists = layer1_scores.rescore_with_run(scorer, make_request_lists(sim), sim)
    else:
      sim = SimulatorConfig(seed=config.seed, num_requests=1000, **sizes)
      lists = make_request_lists(sim)
    with config.unlocked():
      config.num_categories = sim.num_categories
      config.num_business = sim.num_business_lines
    num_train, num_valid = config.num_train, config.num_valid
    rows = (slice(0, num_train), slice(num_train, num_train + num_valid),
            slice(num_train + num_valid, config.num_lists))
    info = {"dataset": "simulator", "utility": "true utility",
            "ndcg": "NDCG@k vs true click probabilities",
            "initial_ranker": f"Layer 1 run {scorer}" if scorer else "simulator"}
  elif dataset == "kuairand":
    if config.get("scorer_workdir", ""):
      raise ValueError("config.scorer_workdir scores simulator lists only; for KuaiRand lists "
                       "pass per-row scores to kuairand_lists.build_request_lists(initial_scores=)")
    spec = config.kuairand
    if not spec.manual_dir:
      raise ValueError("dataset 'kuairand' needs --config.kuairand.manual_dir, the folder of the "
                       "official KuaiRand CSV files (see docs/datasets.md)")
    lists, data_info = kuairand_lists.load(
        spec.manual_dir, spec.release, num_candidates=config.num_candidates,
        min_candidates=spec.min_candidates, label=spec.label, prior_strength=spec.prior_strength,
        repeat_decay=spec.repeat_decay, seed=config.seed)
    splits = kuairand_lists.date_splits(lists.inputs["date"], spec.valid_days, spec.test_days)
    # A seeded subset of at most max_lists[i] requests per split, in date order.
    rng = np.random.default_rng(config.seed)
    chosen = [np.sort(rng.permutation(np.arange(s.start, s.stop))[:cap])
              for s, cap in zip(splits, spec.max_lists)]
    lists = _subset(lists, np.concatenate(chosen))
    ends = np.cumsum([len(c) for c in chosen])
    rows = (slice(0, ends[0]), slice(ends[0], ends[1]), slice(ends[1], ends[2]))
    with config.unlocked():
      config.num_categories = data_info["num_categories"]
      config.num_business = data_info["num_business"]
    info = {"dataset": f"kuairand:{spec.release}", "utility": "label utility",
            "ndcg": f"NDCG@k vs observed {spec.label}",
            **{name: data_info[name] for name in (
                "user_days", "lists", "dropped_too_few_candidates", "dropped_no_positive",
                "dropped_no_negative", "truncated_to_num_candidates", "mean_candidates",
                "mean_positives", "num_categories", "num_business", "source")},
            "dates": {split: [int(lists.inputs["date"][r][0]), int(lists.inputs["date"][r][-1])]
                      for split, r in zip(("train", "valid", "test"), rows)}}
  else:
    raise ValueError(f"config.dataset must be 'simulator' or 'kuairand', got {dataset!r}")
  info["lists_per_split"] = [int(r.stop - r.start) for r in rows]
  log(f"lists: {info}")
  return lists, rows, config, info
